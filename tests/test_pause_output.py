"""``wsgi.pause_output`` (seed 003): park on ``b""`` after a pause, holding no thread, until ``resume()``."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from conftest import get_many, raw_exchange, wait_for


@pytest.mark.parametrize("key", ["wsgi.pause_output", "wsgiplus.pause_output"])
def test_30_parked_requests_on_2_threads_resumed_from_another_thread(serve: Any, key: str) -> None:
    """All 30 park before any is resumed; on 2 threads only possible if parking holds none."""
    n = 30
    resumes: list[Any] = []
    lock = threading.Lock()
    all_parked = threading.Event()
    resumer_threads: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        resume = environ[key]()
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"before "
        with lock:
            resumes.append(resume)
            if len(resumes) == n:
                all_parked.set()
        yield b""  # parks here
        yield b"after " + threading.current_thread().name.split("-")[0].encode()

    def resumer() -> None:
        if all_parked.wait(30):
            resumer_threads.append(threading.current_thread().name)
            for resume in resumes:
                resume()

    threading.Thread(target=resumer, name="resumer", daemon=True).start()
    server = serve(app, threads=2)
    results = get_many(server.port, ["/"] * n, timeout=60)
    assert results == [(200, b"before after wsgiplus")] * n
    assert resumer_threads == ["resumer"]


def test_resume_before_the_empty_item_does_not_park(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        resume = environ["wsgi.pause_output"]()
        start_response("200 OK", [("Content-Type", "text/plain")])
        resume()  # already resumed: the b"" below is just an empty item
        yield b"x"
        yield b""
        yield b"y"

    server = serve(app, threads=1)
    assert get_many(server.port, ["/", "/"]) == [(200, b"xy"), (200, b"xy")]


def test_empty_items_without_a_pause_are_ignored(serve: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b"a"
        yield b""

    server = serve(app, threads=1)
    assert get_many(server.port, ["/"]) == [(200, b"a")]


def test_never_resumed_request_is_closed_when_its_client_leaves(serve: Any) -> None:
    """The parked generator is closed (its ``finally`` runs) and the thread was never held."""
    parked = threading.Event()
    closed = threading.Event()
    resumes: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/ping":
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"pong"
            return
        resumes.append(environ["wsgi.pause_output"]())
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            yield b"waiting"
            parked.set()
            yield b""
            yield b"never sent"
        finally:
            closed.set()

    server = serve(app, threads=1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /park HTTP/1.1\r\nHost: t\r\n\r\n")
    assert parked.wait(10)
    # the single thread is free while the request is parked
    assert b"pong" in raw_exchange(server.port, b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert not closed.is_set()
    sock.close()
    assert closed.wait(10)
    resumes[0]()  # a late resume() after the close is harmless
    assert b"pong" in raw_exchange(server.port, b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def test_never_resumed_class_iterable_gets_close_called(serve: Any) -> None:
    closed = threading.Event()
    parked = threading.Event()

    class Body:
        def __init__(self, environ: dict[str, Any]) -> None:
            self.resume = environ["wsgi.pause_output"]()
            self.items = iter([b"a", b"", b"b"])

        def __iter__(self) -> Any:
            return self

        def __next__(self) -> bytes:
            item = next(self.items)
            if item == b"":
                parked.set()
            return item

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body(environ)

    server = serve(app, threads=1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert parked.wait(10)
    sock.close()
    assert wait_for(closed.is_set)
