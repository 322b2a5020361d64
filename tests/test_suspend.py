"""Suspension: a yielded future gives the thread back; the request resumes when it is done."""

from __future__ import annotations

import asyncio
import gc
import http.client
import logging
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

from conftest import get_many, raw_exchange, read_until_close, wait_for


def barrier_app(n: int, hold_thread: bool, wait: float) -> tuple[Any, list[bool], list]:
    """An app whose futures complete only once ``n`` requests wait on one.

    With ``hold_thread`` it waits in its thread (``fut.result()``) instead of yielding,
    as a plain WSGI app must: the control that shows the barrier catches held threads.
    """
    futures: list[Future] = []
    lock = threading.Lock()
    all_in = threading.Event()
    decided: list[bool] = []

    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        with lock:
            if decided:  # came after the coordinator gave up: the barrier is broken
                fut.set_exception(RuntimeError("too late"))
            futures.append(fut)
            if len(futures) == n:
                all_in.set()
        if not hold_thread:
            yield fut
        try:
            value = fut.result(timeout=wait + 5)
        except Exception:
            value = "barrier broken"
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield value.encode()

    def coordinator() -> None:
        ok = all_in.wait(wait)
        with lock:
            decided.append(ok)
            for fut in futures:
                if ok:
                    fut.set_result("resumed")
                else:
                    fut.set_exception(RuntimeError("not all requests suspended"))

    threading.Thread(target=coordinator, daemon=True).start()
    return app, decided, futures


def test_suspension_frees_threads_barrier(serve: Any) -> None:
    """200 requests on 2 threads; every future completes only once all 200 wait on one."""
    n = 200
    app, decided, futures = barrier_app(n, hold_thread=False, wait=60)
    server = serve(app, threads=2)
    results = get_many(server.port, ["/"] * n, timeout=90)
    assert decided == [True], f"only {len(futures)} of {n} requests reached the app"
    assert [r for r in results if r != (200, b"resumed")] == []
    assert wait_for(lambda: server.server.pool.busy() == 0)


def test_barrier_catches_a_server_that_holds_threads(serve: Any) -> None:
    """Control: the same barrier, with the app holding its thread, breaks on 2 threads."""
    n = 20
    app, decided, futures = barrier_app(n, hold_thread=True, wait=1.5)
    server = serve(app, threads=2)
    results = get_many(server.port, ["/"] * n, timeout=60)
    assert decided == [False]  # only the 2 threads' requests were in when it gave up
    assert (200, b"resumed") not in results


def test_future_before_start_response_between_chunks_and_many_times(serve: Any) -> None:
    def done(value: Any) -> Future:
        fut: Future = Future()
        threading.Timer(0.001, fut.set_result, args=(value,)).start()
        return fut

    def app(environ: dict, start_response: Any) -> Any:
        fut = done("before")
        yield fut
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield fut.result().encode() + b"\n"
        for i in range(50):
            fut = done(i)
            yield fut
            yield b"%d," % fut.result()
            yield b""  # empty strings are not body and not suspensions

    server = serve(app, threads=1)
    status, body = get_many(server.port, ["/"])[0]
    assert status == 200
    assert body == b"before\n" + b"".join(b"%d," % i for i in range(50))


def test_failing_future_lets_the_app_answer_502(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        threading.Timer(0.01, fut.set_exception, args=(ConnectionError("upstream down"),)).start()
        yield fut
        try:
            fut.result()
        except ConnectionError as exc:
            start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
            yield str(exc).encode()

    server = serve(app)
    assert get_many(server.port, ["/"]) == [(502, b"upstream down")]


def test_cancelled_future_resumes_the_app(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        threading.Timer(0.01, fut.cancel).start()
        yield fut
        start_response("200 OK", [])
        yield b"cancelled" if fut.cancelled() else b"not cancelled"

    server = serve(app)
    assert get_many(server.port, ["/"]) == [(200, b"cancelled")]


def test_asyncio_future_from_another_loop(serve: Any) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def app(environ: dict, start_response: Any) -> Any:
        async def make() -> asyncio.Future:
            fut = loop.create_future()
            loop.call_later(0.01, fut.set_result, b"from asyncio")
            return fut

        fut = asyncio.run_coroutine_threadsafe(make(), loop).result()
        yield fut  # an asyncio.Future of a foreign loop: its callback must be added on that loop
        start_response("200 OK", [])
        yield fut.result()

    try:
        server = serve(app)
        assert get_many(server.port, ["/"] * 20) == [(200, b"from asyncio")] * 20
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_future_like_object_with_only_add_done_callback(serve: Any) -> None:
    class Deferred:
        def __init__(self) -> None:
            self.callbacks: list = []

        def add_done_callback(self, cb: Any) -> None:
            self.callbacks.append(cb)

        def fire(self) -> None:
            for cb in self.callbacks:
                cb(self)

    def app(environ: dict, start_response: Any) -> Any:
        d = Deferred()
        threading.Timer(0.01, d.fire).start()
        yield d
        start_response("200 OK", [])
        yield b"fired"

    server = serve(app)
    assert get_many(server.port, ["/"]) == [(200, b"fired")]


def test_yielding_something_else_is_an_app_error(serve: Any, caplog: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield "text, not bytes"

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="wsgiplus.error"):
        status, _ = get_many(server.port, ["/"])[0]
    assert status == 500
    assert "the app yielded str" in caplog.text and "Traceback" in caplog.text


def test_app_error_before_and_after_headers(serve: Any, caplog: Any) -> None:
    closed: list[str] = []

    def app(environ: dict, start_response: Any) -> Any:
        try:
            if environ["PATH_INFO"] == "/early":
                raise ValueError("boom early")
            start_response("200 OK", [])
            yield b"partial"
            raise ValueError("boom late")
        finally:
            closed.append(environ["PATH_INFO"])

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="wsgiplus.error"):
        assert get_many(server.port, ["/early"])[0][0] == 500
        raw = raw_exchange(server.port, b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"partial" in raw
    assert not raw.endswith(b"0\r\n\r\n")  # the chunked body is never terminated: the client sees the break
    assert "boom early" in caplog.text and "boom late" in caplog.text
    assert sorted(closed) == ["/early", "/late"]


class Tracked:
    """An app iterable that records close() calls and the future it waits on."""

    def __init__(self, events: list, fut: Future) -> None:
        self.events = events
        self.fut = fut
        self.step = 0

    def __iter__(self) -> Tracked:
        return self

    def __next__(self) -> Any:
        self.step += 1
        if self.step == 1:
            self.events.append("suspended")
            return self.fut
        raise StopIteration

    def close(self) -> None:
        self.events.append("closed")


def test_client_disconnect_while_suspended_closes_and_cancels(serve: Any) -> None:
    events: list[str] = []
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        return Tracked(events, fut)

    server = serve(app, threads=2)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert wait_for(lambda: events == ["suspended"])
    assert wait_for(lambda: server.server.pool.busy() == 0)  # suspended: no thread held
    sock.close()
    assert wait_for(lambda: events == ["suspended", "closed"]), events
    assert fut.cancelled()
    assert wait_for(lambda: server.server.pool.busy() == 0 and server.server.active == 0)


def test_generator_close_runs_finally_on_disconnect(serve: Any) -> None:
    finished: list[str] = []
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        try:
            yield b"first"
            yield fut
            yield b"never"
        finally:
            finished.append("finally")

    server = serve(app)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"first" in sock.recv(4096)
    sock.close()
    assert wait_for(lambda: finished == ["finally"])
    assert fut.cancelled()


def test_client_disconnected_callable(serve: Any) -> None:
    seen: list[bool] = []
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        check = environ["wsgiplus.client_disconnected"]
        seen.append(check())
        start_response("200 OK", [])
        yield b"x"
        try:
            yield fut
        finally:
            seen.append(check())

    server = serve(app)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    sock.recv(4096)
    sock.close()
    assert wait_for(lambda: len(seen) == 2)
    assert seen == [False, True]


def test_request_timeout_while_suspended_gives_504_and_closes(serve: Any, caplog: Any) -> None:
    events: list[str] = []
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        return Tracked(events, fut)

    server = serve(app, request_timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"):
        raw = raw_exchange(server.port, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n", timeout=10)
    assert raw.startswith(b"HTTP/1.1 504 ")
    assert events == ["suspended", "closed"] and fut.cancelled()
    assert "request timeout" in caplog.text


def test_request_timeout_after_headers_aborts(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"started"
        yield Future()  # never completes

    server = serve(app, request_timeout=0.3)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", timeout=10)
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"started" in raw and not raw.endswith(b"0\r\n\r\n")


def test_many_suspended_requests_leave_no_garbage(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        threading.Timer(0.01, fut.set_result, args=(None,)).start()
        yield fut
        start_response("200 OK", [("Content-Length", "2")])
        yield b"ok"

    server = serve(app, threads=2)
    assert get_many(server.port, ["/"] * 300) == [(200, b"ok")] * 300
    assert wait_for(lambda: not server.server.connections and server.server.active == 0)
    gc.collect()


def test_keepalive_connection_reused_across_suspensions(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        threading.Timer(0.005, fut.set_result, args=(environ["REMOTE_PORT"],)).start()
        yield fut
        body = fut.result().encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        yield body

    server = serve(app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    ports = set()
    for _ in range(20):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        ports.add(resp.read())
    conn.close()
    assert len(ports) == 1  # one connection served all 20
    time.sleep(0)


def test_read_until_close_helper_is_bounded() -> None:
    a, b = socket.socketpair()
    try:
        assert read_until_close(a, timeout=0.1) == b""
    finally:
        a.close()
        b.close()
