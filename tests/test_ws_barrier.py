"""The headline: 2,000 WebSockets on ``--threads 2``, every receive pending at once.

Each server-side socket calls ``receive()`` and yields the future; no client
sends anything until all 2,000 receives are pending - a count, not a
stopwatch. With a thread held per socket (Flask-Sock on gunicorn gthread) at
most 2 could be. Then every client sends one message and gets its echo.
"""

from __future__ import annotations

import asyncio
import resource
import threading
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

N = 2000


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"needs {needed} file descriptors")


class Barrier:
    def __init__(self, n: int) -> None:
        self.n = n
        self.pending = 0
        self.lock = threading.Lock()
        self.all_pending = threading.Event()

    def arrive(self) -> None:
        with self.lock:
            self.pending += 1
            if self.pending == self.n:
                self.all_pending.set()


def make_app(barrier: Barrier) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return echo_once(environ["wsgiplus.websocket"].accept())

    def echo_once(ws: Any) -> Any:
        fut = ws.receive()
        barrier.arrive()  # counted once the future exists: it cannot be done yet
        yield fut
        message = fut.result()
        if message is not None:
            yield ws.send(message)
        fut = ws.receive()  # wait for the client's close
        yield fut

    return app


async def open_socket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, WSConnection]:
    client = WSConnection(ConnectionType.CLIENT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(client.send(Request(host="test", target="/ws")))
    while True:
        data = await reader.read(65536)
        assert data, "closed during the handshake"
        client.receive_data(data)
        events = list(client.events())
        if events:
            assert isinstance(events[0], AcceptConnection)
            return reader, writer, client


async def echo_one(conn: Any, text: str) -> str:
    reader, writer, client = conn
    writer.write(client.send(TextMessage(data=text)))
    while True:
        data = await reader.read(65536)
        assert data, "closed before the echo"
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, TextMessage):
                writer.close()
                return event.data


@pytest.mark.timeout(300)
def test_2000_websockets_on_two_threads(serve) -> None:
    raise_fd_limit(2 * N + 200)
    barrier = Barrier(N)
    server = serve(make_app(barrier), threads=2, backlog=N, ws_per_message_deflate=False,
                   ws_ping_interval=None)

    async def main() -> list[str]:
        sem = asyncio.Semaphore(200)  # connect in waves so the listen queue never overflows

        async def opened() -> Any:
            async with sem:
                return await asyncio.wait_for(open_socket(server.port), 60)

        conns = await asyncio.wait_for(asyncio.gather(*(opened() for _ in range(N))), 180)
        ok = await asyncio.get_running_loop().run_in_executor(None, barrier.all_pending.wait, 60)
        assert ok, f"only {barrier.pending} receives pending"
        assert server.call(lambda: server.server.websockets) == N
        return await asyncio.wait_for(
            asyncio.gather(*(echo_one(c, f"m{i}") for i, c in enumerate(conns))), 120)

    replies = asyncio.run(main())
    assert replies == [f"m{i}" for i in range(N)]
