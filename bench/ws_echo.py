"""WebSocket echo throughput: C clients, each doing M round trips; WSGI+ against its peers, same run.

    python bench/ws_echo.py [--clients 50] [--messages 200] [--size 64] [--servers wsgiplus,uvicorn,gunicorn]

* ``wsgiplus``: examples/ws_echo.py (thread-free sockets), ``--threads 8``.
* ``uvicorn``: an ASGI echo on uvicorn's ``websockets`` implementation.
* ``gunicorn``: gunicorn ``gthread`` + Flask-Sock (tests/apps/ws_handover.py), one thread per
  socket, so ``--threads`` = clients.

Clients are asyncio + wsproto in this process (no compression). Prints one JSON
line per server: messages/s and the p50/p99 round trip. Every phase is bounded.
Only ratios between servers of the same run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ws_idle import ASGI_ECHO, Client  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def start(kind: str, clients: int, tmp: Path) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src"), str(tmp),
                                                       str(ROOT / "tests" / "apps")]))
    if kind == "wsgiplus":
        cmd = [sys.executable, "-m", "wsgiplus", "examples.ws_echo:app", "--bind", "127.0.0.1:0",
               "--threads", "8", "--no-access-log", "--no-ws-per-message-deflate"]
        pattern = r"listening on 127\.0\.0\.1:(\d+)"
    elif kind == "uvicorn":
        (tmp / "asgi_echo.py").write_text(ASGI_ECHO)
        cmd = [sys.executable, "-m", "uvicorn", "asgi_echo:app", "--host", "127.0.0.1", "--port", "0",
               "--ws", "websockets", "--no-access-log", "--ws-per-message-deflate", "false",
               "--log-level", "warning"]
        pattern = r"running on http://127\.0\.0\.1:(\d+)"
        import socket

        with socket.socket() as s:  # uvicorn --log-level warning does not print the port
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd[cmd.index("0")] = str(port)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL, start_new_session=True, text=True)
        _wait_port(port)
        return proc, port
    elif kind == "gunicorn":
        cmd = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "-k", "gthread", "--threads",
               str(clients + 4), "--no-control-socket", "ws_handover:flask_app"]
        pattern = r"Listening at: http://127\.0\.0\.1:(\d+)"
    else:
        raise SystemExit(kind)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        m = re.search(pattern, line, re.IGNORECASE)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            port = int(m.group(1))
            _wait_port(port)
            return proc, port
    proc.kill()
    raise SystemExit(f"{kind} did not start")


def _wait_port(port: int) -> None:
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.3)  # gunicorn: the worker boots after the master listens
            return
        except OSError:
            time.sleep(0.05)


async def run(port: int, clients: int, messages: int, size: int, path: str) -> dict[str, float]:
    conns = []
    for _ in range(clients):
        c = Client()
        await asyncio.wait_for(c.open_path(port, path), 30)
        conns.append(c)
    text = "x" * size
    rtts: list[float] = []

    async def loop(c: Client) -> None:
        for _ in range(messages):
            t = time.perf_counter()
            assert await c.echo(text) == text
            rtts.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)), 300)
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.writer.close()
    rtts.sort()
    return {"messages_per_s": round(clients * messages / elapsed), "p50_ms": round(statistics.median(rtts) * 1000, 2),
            "p99_ms": round(rtts[int(len(rtts) * 0.99) - 1] * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--servers", default="wsgiplus,uvicorn,gunicorn")
    args = ap.parse_args()
    for kind in args.servers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start(kind, args.clients, Path(tmp))
            try:
                path = "/echo" if kind == "gunicorn" else "/"
                result = asyncio.run(run(port, args.clients, args.messages, args.size, path))
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        print(json.dumps({"server": kind, "clients": args.clients, "messages": args.messages,
                          "size": args.size, **result}), flush=True)


if __name__ == "__main__":
    main()
