"""Each request runs in its own contextvars.Context, across suspensions and threads."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future
from typing import Any

from conftest import get_many, wait_for

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


def test_contextvar_follows_a_request_that_resumes_on_another_thread(serve: Any) -> None:
    """Deterministic: the thread a request started on is held by another request when it resumes."""
    fut: Future = Future()
    started_on: list[int] = []
    hold = threading.Event()
    holding = threading.Event()

    def app(environ: dict, start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        request_id.set(path)
        if path == "/a":
            started_on.append(threading.get_ident())
            yield fut
            moved = threading.get_ident() != started_on[0]
            body = f"{request_id.get()} moved={moved}"
        elif threading.get_ident() == started_on[0] and not holding.is_set():
            holding.set()
            hold.wait(30)  # keeps /a's first thread busy
            body = request_id.get()
        else:
            body = "elsewhere"
        start_response("200 OK", [])
        yield body.encode()

    server = serve(app, threads=2)
    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.update(a=get_many(server.port, ["/a"])[0]))
    a.start()
    assert wait_for(lambda: bool(started_on)) and wait_for(lambda: server.server.pool.busy() == 0)
    b = None
    for _ in range(60):  # a blocker must land on /a's thread; each try is a fair coin
        b = threading.Thread(target=lambda: results.update(b=get_many(server.port, ["/b"])[0]))
        b.start()
        if wait_for(holding.is_set, timeout=0.5):
            break
        b.join(10)
    assert holding.is_set()
    fut.set_result(None)  # /a resumes: its first thread is busy, so on the other one
    a.join(30)
    hold.set()
    b.join(30)
    assert results["a"] == (200, b"/a moved=True")
    assert results["b"] == (200, b"/b")


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
