"""Load clients that wrk cannot play: many idle requests, slow header senders,
one fast big download, SSE listeners. Each prints one JSON line of counts.

``python -m bench.clients idle|slow|stream|sse ...`` (see ``main``). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _open(port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)


# -- idle: N requests at once, held open -------------------------------------------


async def idle(port: int, n: int, hold: float) -> dict:
    """Send ``n`` requests at once and keep them open ``hold`` seconds; count what happens."""
    stats = {"connected": 0, "connect_failed": 0, "answered": 0, "reset": 0}
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(512)  # connects in flight; the rest queue here, not in SYN retries
    deadline = time.monotonic() + hold

    async def one() -> None:
        async with sem:
            try:
                reader, writer = await _open(port, max(0.1, min(10.0, deadline - time.monotonic())))
            except (OSError, asyncio.TimeoutError):
                stats["connect_failed"] += 1
                return
        stats["connected"] += 1
        writers.append(writer)
        try:
            writer.write(REQUEST)
            data = await asyncio.wait_for(reader.read(1), max(0.1, deadline - time.monotonic()))
            if data:
                stats["answered"] += 1
            else:
                stats["reset"] += 1
        except (OSError, asyncio.TimeoutError):
            pass

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    await asyncio.wait(tasks, timeout=hold + 1)
    stats["seconds"] = round(time.monotonic() - t0, 2)
    for t in tasks:
        t.cancel()
    for w in writers:
        w.transport.abort()
    return stats


# -- slow: clients that send their request head one byte at a time -----------------


async def slow(port: int, n: int, duration: float, interval: float) -> dict:
    stats = {"slow_connected": 0, "slow_answered": 0, "slow_failed": 0}
    deadline = time.monotonic() + duration

    async def one() -> None:
        try:
            reader, writer = await _open(port, 5)
        except (OSError, asyncio.TimeoutError):
            stats["slow_failed"] += 1
            return
        stats["slow_connected"] += 1
        try:
            while time.monotonic() < deadline:
                for i in range(len(REQUEST)):
                    writer.write(REQUEST[i : i + 1])
                    await asyncio.sleep(interval)
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), max(0.1, deadline - time.monotonic()))
                stats["slow_answered"] += 1
                await asyncio.wait_for(reader.read(13), 5)  # the hello body
        except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            if time.monotonic() < deadline:
                stats["slow_failed"] += 1
        finally:
            writer.transport.abort()

    await asyncio.wait([asyncio.ensure_future(one()) for _ in range(n)], timeout=duration + 2)
    return stats


# -- stream: one client, one big body -------------------------------------------------


def stream(port: int, path: str, timeout: float) -> dict:
    """Download one response as fast as a socket can, and time it.

    The body ends at its Content-Length, or at the last chunk when the server
    chose chunked framing (granian drops the app's Content-Length); ``bytes``
    counts what came after the head, chunk framing included.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    head = b""
    total = 0
    length: int | None = None  # None: head not parsed yet; -1: chunked or until close
    chunked = False
    tail = b""
    complete = False
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        n = sock.recv_into(view)
        if not n:
            complete = length == -1 and not chunked
            break
        if length is None:
            head += bytes(view[:n])
            if b"\r\n\r\n" not in head:
                continue
            h, _, rest = head.partition(b"\r\n\r\n")
            length = -1
            for line in h.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif line.startswith(b"transfer-encoding:") and b"chunked" in line:
                    chunked = True
            total, tail = len(rest), rest[-5:]
        else:
            total += n
            tail = (tail + bytes(view[max(0, n - 5) : n]))[-5:]
        if length >= 0 and total >= length:
            complete = True
            break
        if chunked and tail == b"0\r\n\r\n":
            complete = True
            break
    secs = time.monotonic() - t0
    sock.close()
    return {"bytes": total, "seconds": round(secs, 4), "mb_s": round(total / secs / 1e6, 1), "complete": complete}


def slow_reader(port: int, rate: int, duration: float) -> dict:
    """Read a big response at ``rate`` bytes/s for ``duration`` s: a server must not buffer the rest."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    t0 = time.monotonic()
    total = 0
    step = 0.02
    while time.monotonic() - t0 < duration:
        data = sock.recv(max(1, int(rate * step)))
        if not data:
            break
        total += len(data)
        time.sleep(step)
    sock.close()
    return {"slow_bytes": total, "slow_seconds": round(time.monotonic() - t0, 2)}


# -- sse: many listeners --------------------------------------------------------------


async def sse(port: int, n: int, duration: float) -> dict:
    counts = [0] * n
    first: list[float | None] = [None] * n
    t0 = time.monotonic()
    deadline = t0 + duration

    async def one(i: int) -> None:
        try:
            reader, writer = await _open(port, duration)
        except (OSError, asyncio.TimeoutError):
            return
        try:
            writer.write(REQUEST)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                data = await asyncio.wait_for(reader.read(65536), left)
                if not data:
                    return
                k = data.count(b"data: ")
                if k and first[i] is None:
                    first[i] = time.monotonic() - t0
                counts[i] += k
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.transport.abort()

    await asyncio.wait([asyncio.ensure_future(one(i)) for i in range(n)], timeout=duration + 2)
    served = [c for c in counts if c]
    firsts = sorted(f for f in first if f is not None)
    return {
        "events": sum(counts),
        "events_s": round(sum(counts) / duration, 1),
        "clients_served": len(served),
        "first_event_p50_s": round(firsts[len(firsts) // 2], 3) if firsts else None,
        "first_event_max_s": round(firsts[-1], 3) if firsts else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.clients")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("idle")
    a.add_argument("port", type=int)
    a.add_argument("n", type=int)
    a.add_argument("hold", type=float)
    a = sub.add_parser("slow")
    a.add_argument("port", type=int)
    a.add_argument("n", type=int)
    a.add_argument("duration", type=float)
    a.add_argument("--interval", type=float, default=0.05)
    a = sub.add_parser("stream")
    a.add_argument("port", type=int)
    a.add_argument("--path", default="/")
    a.add_argument("--timeout", type=float, default=60)
    a = sub.add_parser("slow-reader")
    a.add_argument("port", type=int)
    a.add_argument("--rate", type=int, default=2_000_000)
    a.add_argument("--duration", type=float, default=4)
    a = sub.add_parser("sse")
    a.add_argument("port", type=int)
    a.add_argument("n", type=int)
    a.add_argument("duration", type=float)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.cmd == "idle":
        out = asyncio.run(idle(args.port, args.n, args.hold))
    elif args.cmd == "slow":
        out = asyncio.run(slow(args.port, args.n, args.duration, args.interval))
    elif args.cmd == "stream":
        out = stream(args.port, args.path, args.timeout)
    elif args.cmd == "slow-reader":
        out = slow_reader(args.port, args.rate, args.duration)
    else:
        out = asyncio.run(sse(args.port, args.n, args.duration))
    print("BENCHJSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
