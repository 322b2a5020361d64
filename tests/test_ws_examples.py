"""The WebSocket examples, each started with its one documented command."""

from __future__ import annotations

import asyncio
import json

from test_examples import example, request
from websockets.asyncio.client import connect

N = 50


def test_chat_room_broadcasts_to_every_member_on_two_threads() -> None:
    with example("examples.ws_chat:app", threads=2) as port:

        async def main() -> None:
            members = [await connect(f"ws://127.0.0.1:{port}/chat/lobby?name=u{i}", open_timeout=30)
                       for i in range(N)]
            try:
                # every member is in the room (each a suspended generator, not a thread)
                for _ in range(100):
                    status, _, body = await request(port, "GET", "/rooms")
                    if json.loads(body).get("lobby") == N:
                        break
                    await asyncio.sleep(0.05)
                assert json.loads(body) == {"lobby": N}
                await members[0].send("hello all")

                async def until_hello(ws: object) -> str:
                    while True:
                        message = await asyncio.wait_for(ws.recv(), 30)  # type: ignore[attr-defined]
                        if message == "u0: hello all":
                            return message

                got = await asyncio.wait_for(asyncio.gather(*(until_hello(m) for m in members)), 60)
                assert got == ["u0: hello all"] * N
                # a plain request to another room: not found, and the lobby keeps working
                await members[1].send("second")
                assert await asyncio.wait_for(until_text(members[2], "u1: second"), 30)
            finally:
                await asyncio.gather(*(m.close() for m in members))
            for _ in range(100):
                _, _, body = await request(port, "GET", "/rooms")
                if json.loads(body) == {}:
                    break
                await asyncio.sleep(0.05)
            assert json.loads(body) == {}  # everyone left: finally blocks ran

        asyncio.run(main())


async def until_text(ws: object, text: str) -> bool:
    while True:
        if await ws.recv() == text:  # type: ignore[attr-defined]
            return True


def test_django_websocket_view() -> None:
    from pathlib import Path

    from conftest import cli_server
    from websockets.sync.client import connect as sync_connect

    apps = Path(__file__).resolve().parent / "apps"
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(apps), os.environ.get("PYTHONPATH", "")]))
    with cli_server(["ws_django:application", "--threads", "2", "--no-access-log"], apps, env=env) as srv:
        with sync_connect(f"ws://127.0.0.1:{srv.port}/ws/p-?tag=t", subprotocols=["x", "echo.v1"]) as ws:
            assert ws.subprotocol == "echo.v1"
            ws.send("hi")
            assert ws.recv(timeout=10) == "p-hi:t:echo.v1"
        status, _, body = asyncio.run(request(srv.port, "GET", "/ws/p-"))
        assert status == 400  # not an upgrade
        status, _, body = asyncio.run(request(srv.port, "GET", "/"))
        assert (status, body) == (200, b"plain django")


def test_streaming_upload_200_slow_uploaders_on_two_threads(tmp_path) -> None:
    import hashlib
    import os

    env = {"UPLOAD_DIR": str(tmp_path)}
    with example("examples.upload:app", threads=2, env=env) as port:

        async def main() -> None:
            conns = []
            for i in range(200):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PUT /files/f%d HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                             b"Connection: close\r\n\r\nhello" % i)
                conns.append((reader, writer))
            # all 200 are inside the app, waiting for the rest of their body on a future
            for _ in range(200):
                _, _, body = await request(port, "GET", "/stats")
                if json.loads(body)["in_progress"] == 200:
                    break
                await asyncio.sleep(0.05)
            assert json.loads(body) == {"in_progress": 200}
            for _, writer in conns:
                writer.write(b"world")
            replies = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in conns)), 60)
            digest = hashlib.sha256(b"helloworld").hexdigest()
            for i, data in enumerate(replies):
                assert data.startswith(b"HTTP/1.1 201"), data[:100]
                assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"name": f"f{i}", "bytes": 10,
                                                                      "sha256": digest}
            # and one large body, streamed through
            big = os.urandom(1 << 20) * 32  # 32 MiB
            status, _, body = await request(port, "PUT", "/files/big", big)
            assert status == 201 and json.loads(body)["sha256"] == hashlib.sha256(big).hexdigest()
            assert (tmp_path / "big").stat().st_size == len(big)

        asyncio.run(main())
