"""Each request runs in its own contextvars.Context, across suspensions and threads."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future
from typing import Any

from conftest import get_many

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def test_contextvar_survives_suspension_across_threads(serve: Any) -> None:
    n = 100
    lock = threading.Lock()
    futures: list[Future] = []
    all_in = threading.Event()
    threads_seen: dict[str, set[str]] = {}

    def app(environ: dict, start_response: Any) -> Any:
        mine = environ["QUERY_STRING"]
        assert request_id.get() == "unset"  # nothing leaks in from an earlier request on this thread
        token = request_id.set(mine)
        threads_seen[mine] = {threading.current_thread().name}
        fut: Future = Future()
        with lock:
            futures.append(fut)
            if len(futures) == n:
                all_in.set()
        yield fut
        threads_seen[mine].add(threading.current_thread().name)
        got = request_id.get()
        request_id.reset(token)  # raises if resumed in a different Context
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield got.encode()

    def release() -> None:
        all_in.wait(60)
        with lock:
            for fut in reversed(futures):  # resume in the opposite order: threads get mixed
                fut.set_result(None)

    threading.Thread(target=release, daemon=True).start()
    server = serve(app, threads=2)
    paths = [f"/?r{i}" for i in range(n)]
    results = get_many(server.port, paths, timeout=60)
    assert results == [(200, f"r{i}".encode()) for i in range(n)]
    # some requests really did resume on another thread than the one they started on
    assert any(len(names) == 2 for names in threads_seen.values())


def test_context_is_fresh_per_request_on_the_same_thread(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        before = request_id.get()
        request_id.set("set-by-" + environ["QUERY_STRING"])  # never reset: must not leak
        start_response("200 OK", [])
        return [before.encode()]

    server = serve(app, threads=1)
    assert get_many(server.port, ["/?a", "/?b", "/?c"]) == [(200, b"unset")] * 3


def test_thread_affinity_resumes_on_the_starting_thread(serve: Any) -> None:
    """An object bound to its creating thread (a sqlite3 connection) survives a suspension."""
    import sqlite3

    n = 40
    lock = threading.Lock()
    futures: list[Future] = []
    all_in = threading.Event()

    def app(environ: dict, start_response: Any) -> Any:
        db = sqlite3.connect(":memory:")  # check_same_thread=True: other threads may not use it
        db.execute("create table t (x)")
        started_on = threading.get_ident()
        fut: Future = Future()
        with lock:
            futures.append(fut)
            if len(futures) == n:
                all_in.set()
        yield fut
        db.execute("insert into t values (1)")  # raises ProgrammingError on another thread
        same = threading.get_ident() == started_on
        db.close()
        start_response("200 OK", [])
        yield b"same" if same else b"moved"

    def release() -> None:
        all_in.wait(60)
        with lock:
            for fut in reversed(futures):
                fut.set_result(None)

    threading.Thread(target=release, daemon=True).start()
    server = serve(app, threads=4, thread_affinity=True)
    assert get_many(server.port, ["/"] * n, timeout=60) == [(200, b"same")] * n
