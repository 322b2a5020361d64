"""A demo upstream for the proxy and aggregator examples: JSON after a delay, on loopback.

    python examples/upstream.py --port 8001 --delay 0.2 --name alpha

Answers every request with ``{"name": ..., "path": ..., "query": ...}`` after
``--delay`` seconds. Plain asyncio, so it can hold thousands of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json


async def serve(host: str, port: int, delay: float, name: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                path, _, query = target.partition("?")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(delay)
                body = json.dumps({"name": name, "path": path, "query": query}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if b"\r\nconnection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, backlog=4096)
    print(f"upstream {name} on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description="demo upstream: JSON after a delay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--name", default="upstream")
    a = p.parse_args()
    asyncio.run(serve(a.host, a.port, a.delay, a.name))


if __name__ == "__main__":
    main()
