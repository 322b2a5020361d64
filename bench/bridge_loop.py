"""Where should the bridge's coroutines run: a dedicated loop thread, or the server's own loop?

    python bench/bridge_loop.py [--requests 3000] [--concurrency 50] [--rounds 3]

Serves one proxy-like WSGI+ endpoint (``httpx.AsyncClient`` GET to a loopback
upstream, then answer) on a real WSGI+ server with 4 threads, two ways:

* ``dedicated``: ``wsgiplus.bridge.run(coro)``, the loop in its own thread;
* ``server``:    ``asyncio.run_coroutine_threadsafe(coro, server_loop)``, the
  coroutine shares the loop that also accepts, parses and writes every socket.

and measures (1) proxy throughput and (2) how a plain ``/hello`` request fares
while coroutines do CPU work (parsing a JSON answer) - whether the app's
coroutines can stall the server's I/O. The upstream and the load generator
are separate processes so they do not compete for this process's GIL.
Prints one table; the figures quoted in docs/writing-apps.md come from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

# -- helper processes -------------------------------------------------------------

UPSTREAM_BODY = json.dumps({"items": [{"id": i, "name": f"item{i}"} for i in range(2000)]}).encode()


async def upstream_main(port_file: str) -> None:
    """A tiny keep-alive HTTP server: /small answers 2 bytes, /big a ~60 KB JSON document."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = UPSTREAM_BODY if b" /big " in head.split(b"\r\n", 1)[0] + b" " else b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    await server.serve_forever()


async def load_main(port: int, path: str, requests: int, concurrency: int) -> None:
    """``concurrency`` keep-alive connections share ``requests`` GETs; prints latencies as JSON."""
    latencies: list[float] = []
    todo = [requests]
    errors = [0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        while todo[0] > 0:
            todo[0] -= 1
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
            latencies.append(time.perf_counter() - t0)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"elapsed": elapsed, "latencies": latencies, "errors": errors[0]}))


# -- the server under test -----------------------------------------------------------


def make_app(mode: str, upstream: str, server_loop: list[Any]) -> Any:
    import httpx

    from wsgiplus import bridge

    clients: dict[int, httpx.AsyncClient] = {}

    async def fetch(path: str) -> bytes:
        loop = id(asyncio.get_running_loop())
        client = clients.get(loop)
        if client is None:
            client = clients[loop] = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=200)
            )
        resp = await client.get(upstream + path)
        if path == "/big":  # CPU work inside the coroutine, as an app's parsing would be
            return str(len(json.loads(resp.content)["items"])).encode()
        return resp.content

    def submit(coro: Any) -> Any:
        if mode == "dedicated":
            return bridge.run(coro)
        return asyncio.run_coroutine_threadsafe(coro, server_loop[0])

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/hello":
            start_response("200 OK", [("Content-Length", "5")])
            return [b"hello"]
        return proxied(environ, start_response)

    def proxied(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        fut = submit(fetch("/big" if path == "/big" else "/small"))
        yield fut
        body = fut.result()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        yield body

    return app


def run_load(port: int, path: str, requests: int, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(port), path, str(requests), str(concurrency)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(out.stdout)


def bench(mode: str, upstream: str, args: argparse.Namespace) -> dict[str, float]:
    from wsgiplus.testing import ServerThread

    loop_box: list[Any] = []
    app = make_app(mode, upstream, loop_box)
    with ServerThread(app, threads=4) as server:
        loop_box.append(server.loop)
        run_load(server.port, "/small", 200, 10)  # warm up clients and connections
        tput = []
        for _ in range(args.rounds):
            r = run_load(server.port, "/small", args.requests, args.concurrency)
            tput.append(args.requests / r["elapsed"])
        # hello latency while 40 connections keep coroutines busy parsing JSON
        bg = subprocess.Popen(
            [sys.executable, __file__, "--load", str(server.port), "/big", str(args.requests // 3), "40"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        hello = run_load(server.port, "/hello", 400, 4)
        bg.wait(600)
    lat = sorted(hello["latencies"])
    return {
        "proxy_rps": statistics.median(tput),
        "hello_p50_ms": lat[len(lat) // 2] * 1000,
        "hello_p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--upstream":
        asyncio.run(upstream_main(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, path, n, c = sys.argv[2:6]
        asyncio.run(load_main(int(port), path, int(n), int(c)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import tempfile

    port_file = os.path.join(tempfile.mkdtemp(), "port")
    upstream_proc = subprocess.Popen([sys.executable, __file__, "--upstream", port_file])
    try:
        for _ in range(500):
            if os.path.exists(port_file):
                break
            time.sleep(0.02)
        upstream = f"http://127.0.0.1:{open(port_file).read()}"
        print(f"{'mode':<10} {'proxy req/s':>12} {'hello p50 ms':>13} {'hello p99 ms':>13}")
        for mode in ("dedicated", "server", "dedicated", "server"):
            r = bench(mode, upstream, args)
            print(f"{mode:<10} {r['proxy_rps']:>12.0f} {r['hello_p50_ms']:>13.2f} {r['hello_p99_ms']:>13.2f}",
                  flush=True)
    finally:
        upstream_proc.terminate()
        upstream_proc.wait(10)


if __name__ == "__main__":
    main()
