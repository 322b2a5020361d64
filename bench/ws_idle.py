"""Idle WebSocket capacity: N open idle sockets on one process, RSS per socket, all still alive.

    python bench/ws_idle.py [--sockets 10000] [--threads 8] [--server wsgiplus|uvicorn]

Starts the server in a subprocess (WSGI+ with examples/ws_echo.py, or uvicorn
with the ``websockets`` implementation and an ASGI echo app for comparison),
opens N WebSockets from this process (asyncio + wsproto, no compression),
lets them sit idle, reads the server's RSS (/proc), then pings every socket
and waits for every pong, and echoes one message on each. Prints one JSON
line. Bounded: every phase has a deadline; the server is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Pong, Request, TextMessage

ROOT = Path(__file__).resolve().parent.parent

ASGI_ECHO = '''
async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": event.get("text"), "bytes": event.get("bytes")})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
'''


def rss_kb(pid: int) -> int:
    """RSS of ``pid`` and its children (uvicorn/wsgiplus run in one process here)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def start_server(kind: str, threads: int, tmp: Path) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")
    if kind == "wsgiplus":
        cmd = [sys.executable, "-m", "wsgiplus", "examples.ws_echo:app", "--bind", "127.0.0.1:0",
               "--threads", str(threads), "--no-access-log", "--backlog", "4096",
               "--no-ws-per-message-deflate", "--ws-ping-interval", "0"]
        pattern = r"listening on 127\.0\.0\.1:(\d+)"
    elif kind == "uvicorn":
        (tmp / "asgi_echo.py").write_text(ASGI_ECHO)
        env["PYTHONPATH"] += os.pathsep + str(tmp)
        cmd = [sys.executable, "-m", "uvicorn", "asgi_echo:app", "--host", "127.0.0.1", "--port", "0",
               "--ws", "websockets", "--no-access-log", "--backlog", "4096", "--ws-ping-interval", "3600",
               "--ws-per-message-deflate", "false"]
        pattern = r"running on http://127\.0\.0\.1:(\d+)"
    else:
        raise SystemExit(f"unknown server {kind}")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        m = re.search(pattern, line, re.IGNORECASE)
        if m:
            # keep draining its log: a full pipe would stall the server (uvicorn logs
            # every WebSocket it opens)
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{kind} did not start")


class Client:
    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self, port: int) -> None:
        await self.open_path(port, "/")

    async def open_path(self, port: int, path: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(self.ws.send(Request(host="bench", target=path)))
        await self.until(AcceptConnection)

    async def until(self, kind: type) -> object:
        while True:
            for event in self.ws.events():
                if isinstance(event, kind):
                    return event
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed")
            self.ws.receive_data(data)

    async def ping(self) -> None:
        self.writer.write(self.ws.send(Ping(payload=b"p")))
        await self.until(Pong)

    async def echo(self, text: str) -> str:
        self.writer.write(self.ws.send(TextMessage(data=text)))
        event = await self.until(TextMessage)
        return event.data  # type: ignore[attr-defined]


async def run(port: int, n: int, pid: int, idle: float) -> dict[str, object]:
    base = rss_kb(pid)
    clients = [Client() for _ in range(n)]
    sem = asyncio.Semaphore(500)

    async def open_one(c: Client) -> None:
        async with sem:
            await c.open(port)

    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(open_one(c) for c in clients)), 300)
    opened = time.monotonic() - t0
    await asyncio.sleep(idle)
    full = rss_kb(pid)
    await asyncio.wait_for(asyncio.gather(*(c.ping() for c in clients)), 300)
    replies = await asyncio.wait_for(asyncio.gather(*(c.echo(f"m{i}") for i, c in enumerate(clients))), 300)
    ok = sum(1 for i, r in enumerate(replies) if r == f"m{i}")
    for c in clients:
        c.writer.close()
    return {"sockets": n, "rss_base_kb": base, "rss_full_kb": full,
            "rss_per_socket_kb": round((full - base) / n, 2), "open_seconds": round(opened, 1),
            "ponged": n, "echoed": ok}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--server", default="wsgiplus", choices=["wsgiplus", "uvicorn"])
    ap.add_argument("--idle", type=float, default=2.0, help="seconds the sockets sit idle before RSS is read")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.sockets + 200)), hard))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(args.server, args.threads, Path(tmp))
        try:
            time.sleep(0.5)
            result = asyncio.run(run(port, args.sockets, proc.pid, args.idle))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    result["server"] = args.server
    result["threads"] = args.threads
    print(json.dumps(result))


if __name__ == "__main__":
    main()
