"""Which real WSGI middleware lets a WSGI+ app suspend, which does not, and the helpers for both.

"Passes" is proved the strict way: 20 requests on 2 threads whose futures
complete only once all 20 wait on one - impossible if the middleware holds
the future (or the thread) itself.
"""

from __future__ import annotations

import gzip
import threading
import warnings
import zlib
from concurrent.futures import Future
from typing import Any
from wsgiref.validate import validator

import pytest
from conftest import get_many
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.middleware.profiler import ProfilerMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.middleware.shared_data import SharedDataMiddleware

from wsgiplus import bridge
from wsgiplus.middleware import BodyFilter, FilterMiddleware, wait_in_place


def barrier_app(n: int) -> tuple[Any, list[Future[str]]]:
    waiting: list[Future[str]] = []
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        fut: Future[str] = Future()
        with lock:
            waiting.append(fut)
            if len(waiting) == n:
                for f in waiting:
                    f.set_result("ok")
            elif len(waiting) == 1:
                def give_up(_: Any) -> None:
                    with lock:
                        for f in waiting:
                            if not f.done():
                                f.set_exception(RuntimeError("not all waited"))

                bridge.sleep(30).add_done_callback(give_up)
        yield fut
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"path=" + environ["PATH_INFO"].encode() + b" "
        yield b""  # an empty item must reach the server unharmed
        yield fut.result().encode()

    return app, waiting


class Upper(BodyFilter):
    def chunk(self, data: bytes) -> bytes:
        return data.upper()


class Gzip(BodyFilter):
    """A compressing filter: changes headers, buffers, flushes at the end."""

    def __init__(self) -> None:
        self.z = zlib.compressobj(6, zlib.DEFLATED, 31)

    def start(self, status: str, headers: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]] | None:
        if not dict(headers).get("Content-Type", "").startswith("text/"):
            return None
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        return status, headers + [("Content-Encoding", "gzip")]

    def chunk(self, data: bytes) -> bytes:
        return self.z.compress(data)

    def end(self) -> bytes:
        return self.z.flush()


PASSING = {
    "werkzeug ProxyFix": lambda app: ProxyFix(app, x_for=1),
    "werkzeug DispatcherMiddleware": lambda app: DispatcherMiddleware(app, {"/other": app}),
    "werkzeug SharedDataMiddleware": lambda app: SharedDataMiddleware(app, {"/static": "/nonexistent"}),
    "wsgiplus FilterMiddleware(upper)": lambda app: FilterMiddleware(app, lambda env: Upper()),
}


@pytest.mark.parametrize("name", list(PASSING))
def test_middleware_that_passes_futures_keeps_suspension(serve: Any, name: str) -> None:
    n = 20
    app, waiting = barrier_app(n)
    server = serve(PASSING[name](app), threads=2)
    results = get_many(server.port, [f"/r{i}" for i in range(n)])
    expected = [f"path=/r{i} ok".encode() for i in range(n)]
    if "upper" in name:
        expected = [e.upper() for e in expected]
    assert results == [(200, e) for e in expected]
    assert len(waiting) == n


def test_filter_middleware_gzip_suspends_and_compresses(serve: Any) -> None:
    n = 20
    app, _ = barrier_app(n)
    server = serve(FilterMiddleware(app, lambda env: Gzip()), threads=2)
    results = get_many(server.port, [f"/g{i}" for i in range(n)])
    assert [(s, gzip.decompress(b)) for s, b in results] == [(200, f"path=/g{i} ok".encode()) for i in range(n)]


def test_filter_passes_pause_output_through(serve: Any) -> None:
    resumes: list[Any] = []
    parked = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        resumes.append(environ["wsgi.pause_output"]())
        parked.set()
        yield b"a"
        yield b""  # parks here until resume()
        yield b"b"

    server = serve(FilterMiddleware(app, lambda env: Upper()), threads=1)
    timer = threading.Thread(target=lambda: parked.wait(10) and resumes[0](), daemon=True)
    timer.start()
    assert get_many(server.port, ["/"]) == [(200, b"AB")]


BREAKING = {
    "werkzeug ProfilerMiddleware": lambda app: ProfilerMiddleware(app, stream=None),
    "werkzeug LintMiddleware": LintMiddleware,
    "wsgiref.validate.validator": validator,
}


@pytest.mark.parametrize("name", list(BREAKING))
def test_body_consuming_middleware_breaks_then_works_with_wait_in_place(serve: Any, name: str) -> None:
    """They join, measure or type-check every item: a future there is an app error, a 500
    (TypeError in b"".join, TypeError in len(), AssertionError). ``wait_in_place`` between them and the app makes them correct again, holding the thread."""
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        fut = bridge.sleep(0.001, b"slept")
        yield fut
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield fut.result()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        broken = serve(BREAKING[name](app), threads=2)
        [(status, body)] = get_many(broken.port, ["/"])
        assert status == 500
        # cProfile allows one active profiler per process since Python 3.12 (before, one per
        # thread): ProfilerMiddleware profiles one request at a time on any threaded server.
        # With wait_in_place a request holds its thread to the end, so one thread serialises
        # them - the two concurrent requests below are then profiled one after the other.
        threads = 1 if name == "werkzeug ProfilerMiddleware" else 2
        fixed = serve(BREAKING[name](wait_in_place(app)), threads=threads)
        assert get_many(fixed.port, ["/", "/x"]) == [(200, b"slept"), (200, b"slept")]
