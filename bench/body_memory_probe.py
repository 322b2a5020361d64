"""Memory held after many concurrent uploads: RSS and request bodies still alive.

    python -m bench.body_memory_probe [--rounds 3] [--concurrency 1000] [--size 1000000] [-- SERVER FLAGS]
    PYTHONPATH=/path/to/other/src python -m bench.body_memory_probe ...   # another checkout's code

Runs ``python -m wsgiplus bench.body_memory_probe:app`` in a subprocess, then
ROUNDS times sends CONCURRENCY uploads of SIZE bytes at once (one connection
each) and waits for all answers. After each round it asks the server's
``/stats``: its RSS and how many ``wsgi.input`` objects are still alive
(tracked with weak references; no gc.collect() is run). Bounded: every wait
has a timeout. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import weakref
from typing import Any

_live: weakref.WeakSet = weakref.WeakSet()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/stats":
        import wsgiplus

        with open("/proc/self/status") as f:
            rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024  # type: ignore[union-attr]
        body = json.dumps({"rss_mb": round(rss / 2**20), "live_bodies": len(_live),
                           "code": os.path.dirname(wsgiplus.__file__)}).encode()
    else:
        stream = environ["wsgi.input"]
        _live.add(stream)
        body = str(len(stream.read())).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def upload(port: int, payload: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % len(payload))
        writer.write(payload)
        await writer.drain()
        return (await reader.read()).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def stats(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return json.loads(data.partition(b"\r\n\r\n")[2])


async def run(port: int, rounds: int, concurrency: int, size: int) -> list[dict[str, Any]]:
    payload = b"x" * size
    out = []
    for i in range(rounds):
        results = await asyncio.wait_for(
            asyncio.gather(*(upload(port, payload) for _ in range(concurrency)), return_exceptions=True), 300)
        ok = sum(r is True for r in results)
        await asyncio.sleep(1.0)
        out.append({"round": i + 1, "ok": ok, **await stats(port)})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("server_flags", nargs="*")
    args = p.parse_args()
    cmd = [sys.executable, "-m", "wsgiplus", "bench.body_memory_probe:app", "--bind", "127.0.0.1:0",
           "--no-access-log", "--body-timeout", "120", *args.server_flags]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "server did not start"
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
        rounds = asyncio.run(run(port, args.rounds, args.concurrency, args.size))
        print(json.dumps({"flags": args.server_flags, "rounds": rounds}))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


if __name__ == "__main__":
    main()
