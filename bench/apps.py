"""The WSGI apps every server runs. ``*_plus`` apps yield futures (WSGI+);
their peers' twins block (``time.sleep``, ``http.client``), which gevent
monkey-patches into cooperative waits.

Settings come from the environment so one import string serves every server:
BENCH_UPSTREAM (host:port), BENCH_WAIT (idle seconds), BENCH_GAUGE (a file
where the idle apps record how many requests were inside the app at once),
BENCH_STREAM_BYTES, BENCH_SSE_EVENTS.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

StartResponse = Callable[..., Any]

HELLO = b"Hello, world!"  # 13 bytes
CHUNK = b"x" * 65536
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "127.0.0.1:9999")
_UP_HOST, _, _UP_PORT = UPSTREAM.rpartition(":")
WAIT = float(os.environ.get("BENCH_WAIT", "15"))
STREAM_BYTES = int(os.environ.get("BENCH_STREAM_BYTES", str(1 << 30)))
SSE_EVENTS = int(os.environ.get("BENCH_SSE_EVENTS", "50"))
SSE_INTERVAL = 0.1
if os.environ.get("BENCH_SWITCH_INTERVAL"):  # GIL hand-off experiments (bench/profile.py)
    import sys

    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))


FILE = os.environ.get("BENCH_FILE", "")


def download(environ: dict[str, Any], start_response: StartResponse) -> Any:
    """A file as Flask's ``send_file`` serves it: ``wsgi.file_wrapper`` with 8 KiB blocks and
    a Content-Length (BENCH_FILE)."""
    f = open(FILE, "rb")  # noqa: SIM115 (the server closes it through the wrapper)
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return iter(lambda: f.read(8192), b"")
    return wrapper(f, 8192)


download_plus = download


def hello(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def ready(app: Callable[..., Any]) -> Callable[..., Any]:
    """``GET /ready`` answers at once, so the runner can tell a slow app's server is up."""

    def wrapper(environ: dict[str, Any], start_response: StartResponse) -> Any:
        if environ.get("PATH_INFO") == "/ready":
            return hello(environ, start_response)
        return app(environ, start_response)

    wrapper.__name__ = app.__name__
    return wrapper


# -- upstream fan-in -----------------------------------------------------------


_local = threading.local()  # per thread; gevent patches it to per greenlet


@ready
def upstream_block(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """One upstream GET on this thread's keep-alive connection (requests.Session style)."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = http.client.HTTPConnection(_UP_HOST, int(_UP_PORT), timeout=30)
    try:
        conn.request("GET", "/")
        body = conn.getresponse().read()
    except Exception:
        conn.close()
        _local.conn = None
        raise
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@ready
def upstream_plus(environ: dict[str, Any], start_response: StartResponse) -> Iterator[Any]:
    from bench import aio

    fut = aio.fetch(_UP_HOST, int(_UP_PORT))
    yield fut
    body = fut.result()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    yield body


# -- idle capacity ---------------------------------------------------------------


class Gauge:
    """Requests inside the app now and at most; a reporter thread writes them to a file
    so the load client can read them while every app thread may be busy."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.now = 0
        self.peak = 0
        self.entered = 0
        self.lock = threading.Lock()
        self.started = False

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.entered += 1
            if self.now > self.peak:
                self.peak = self.now
            if not self.started and self.path:
                self.started = True
                threading.Thread(target=self._report, daemon=True).start()

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def _report(self) -> None:
        path = f"{self.path}.{os.getpid()}"
        while True:
            with open(path + ".tmp", "w") as f:
                f.write(f"{self.now} {self.peak} {self.entered}\n")
            os.replace(path + ".tmp", path)
            time.sleep(0.2)


GAUGE = Gauge(os.environ.get("BENCH_GAUGE"))


@ready
def idle_block(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    GAUGE.enter()
    try:
        time.sleep(WAIT)
    finally:
        GAUGE.leave()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@ready
def idle_plus(environ: dict[str, Any], start_response: StartResponse) -> Iterator[Any]:
    from bench import aio

    GAUGE.enter()
    try:
        yield aio.sleep(WAIT)
    finally:
        GAUGE.leave()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    yield b"ok"


# -- streaming ----------------------------------------------------------------------


@ready
def stream(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
    """STREAM_BYTES in 64 KB chunks, with a Content-Length so no server chunks it."""
    n, rest = divmod(STREAM_BYTES, len(CHUNK))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(STREAM_BYTES))])
    chunk = CHUNK
    for _ in range(n):
        yield chunk
    if rest:
        yield CHUNK[:rest]


def _event(i: int) -> bytes:
    return b"data: event %d\n\n" % i


@ready
def sse_block(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    for i in range(SSE_EVENTS):
        time.sleep(SSE_INTERVAL)
        yield _event(i)


@ready
def sse_plus(environ: dict[str, Any], start_response: StartResponse) -> Iterator[Any]:
    from bench import aio

    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    for i in range(SSE_EVENTS):
        yield aio.sleep(SSE_INTERVAL)
        yield _event(i)
