"""Futures for the WSGI+ apps of the benchmark: an upstream HTTP call and a timer.

WSGI+ apps suspend by yielding a future. ``wsgiplus.bridge`` is the project's
way to get one from a coroutine, and it is what a user's app would use, so
the benchmark uses it. When it is not importable (an older WSGI+), this
module runs its own asyncio loop on one daemon thread and hands back the
``concurrent.futures.Future`` of ``asyncio.run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def loop() -> asyncio.AbstractEventLoop:
    """The helper's loop, started on first use (one per process)."""
    global _loop
    if _loop is None:
        with _lock:
            if _loop is None:
                lp = _new_loop()
                threading.Thread(target=lp.run_forever, name="bench-aio", daemon=True).start()
                _loop = lp
    return _loop


class _Pool:
    """Idle keep-alive connections to one upstream, used from the helper loop only:
    what an async HTTP client's pool does, without a client library's CPU cost."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def get(self, host: str, port: int, path: str) -> bytes:
        idle = self.idle.setdefault((host, port), [])
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: upstream\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(f"upstream answered {head[:40]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        idle.append((reader, writer))
        return body


_pool = _Pool()


try:
    from wsgiplus import bridge as _bridge
except ImportError:
    _bridge = None
if os.environ.get("BENCH_AIO") == "helper":  # compare: this module's own uvloop thread
    _bridge = None


def fetch(host: str, port: int, path: str = "/") -> Future:
    """A future of the upstream's body."""
    if _bridge is not None:
        return _bridge.run(_pool.get(host, port, path))
    return asyncio.run_coroutine_threadsafe(_pool.get(host, port, path), loop())


def sleep(delay: float) -> Future:
    """A future done after ``delay`` seconds; costs a timer handle, not a thread."""
    if _bridge is not None:
        return _bridge.sleep(delay)
    fut: Future = Future()
    lp = loop()

    def arm() -> None:
        lp.call_later(delay, _set_done, fut)

    lp.call_soon_threadsafe(arm)
    return fut


def _set_done(fut: Future) -> None:
    if not fut.done():
        fut.set_result(None)
