"""Streaming, non-blocking request input (opt-in, ``wsgiplus.streaming.streaming_input``)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

from conftest import raw_exchange, wait_for

from wsgiplus.streaming import BodyError, streaming_input


def digest_app(record: dict[str, Any]) -> Any:
    @streaming_input
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        inp = environ["wsgiplus.input"]
        h = hashlib.sha256()
        total = 0
        record["called_with_body_pending"] = record.get("called_with_body_pending", 0) + 1
        while True:
            fut = inp.receive(16384)
            yield fut
            try:
                chunk = fut.result()
            except BodyError:
                record["error"] = True
                raise
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
        body = f"{total} {h.hexdigest()}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        yield body

    return app


def post(port: int, body: bytes, chunked: bool = False, extra: bytes = b"") -> bytes:
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                          for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
        head = b"POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n" + extra + b"\r\n"
    else:
        framed = body
        head = (b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n" % len(body)) + extra + b"\r\n"
    return raw_exchange(port, head + framed, timeout=30)


def test_app_is_called_at_the_head_and_reads_as_it_comes(serve) -> None:
    record: dict[str, Any] = {}
    server = serve(digest_app(record), threads=1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        # the app runs (and waits on a future, holding no thread) before the body is complete
        assert wait_for(lambda: record.get("called_with_body_pending") == 1)
        assert raw_exchange(server.port, b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                            b"Connection: close\r\n\r\nhi").endswith(b"2 " + hashlib.sha256(b"hi").hexdigest().encode())
        sock.sendall(b"world")
        data = sock.recv(65536)
        assert data.endswith(b"10 " + hashlib.sha256(b"helloworld").hexdigest().encode())
    finally:
        sock.close()


def test_large_and_chunked_bodies(serve) -> None:
    server = serve(digest_app({}), threads=2)
    body = bytes(range(256)) * 8000  # 2 MB
    expect = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    assert post(server.port, body).endswith(expect)
    assert post(server.port, body, chunked=True).endswith(expect)


def test_backpressure_stops_reading_while_the_app_does_not_read(serve) -> None:
    gate = threading.Event()
    state: dict[str, Any] = {}

    @streaming_input
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        inp = environ["wsgiplus.input"]
        from concurrent.futures import Future

        wait: Future = Future()
        threading.Thread(target=lambda: (gate.wait(30), wait.set_result(None)), daemon=True).start()
        yield wait  # not reading: the server must stop reading the socket
        total = 0
        while True:
            fut = inp.receive()
            yield fut
            chunk = fut.result()
            if not chunk:
                break
            total += len(chunk)
        start_response("200 OK", [("Content-Length", str(len(str(total))))])
        yield str(total).encode()

    server = serve(app, threads=1, write_buffer_high=64 * 1024)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    size = 64 * 1024 * 1024
    sent = 0
    sock.setblocking(False)
    try:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        chunk = b"x" * 65536
        deadline = time.monotonic() + 20
        stalled_at = None
        while sent < size and time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                # the kernel buffers are full: the server is not reading
                stalled_at = sent
                break
        assert stalled_at is not None and stalled_at < size // 4, stalled_at
        # the server holds at most its high-water mark unread (plus kernel buffers)
        # the server holds at most its high-water mark unread (plus kernel buffers);
        # bounded wait: the server may not even have accepted the connection yet
        def paused() -> bool:
            conns = list(server.server.connections)
            return bool(conns) and conns[0].reading_paused and conns[0].queue[0].body.paused

        assert wait_for(lambda: server.call(paused), timeout=10)
        state["stalled"] = stalled_at
        gate.set()
        sock.setblocking(True)
        sock.settimeout(30)
        view = memoryview(b"x" * 65536)
        while sent < size:
            n = min(len(view), size - sent)
            sock.sendall(view[:n])
            sent += n
        data = b""
        while not data.endswith(str(size).encode()):
            more = sock.recv(65536)
            if not more:
                break
            data += more
        assert data.endswith(str(size).encode())
    finally:
        sock.close()


def test_blocking_read_still_works_and_100_continue_on_first_read(serve) -> None:
    @streaming_input
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()  # blocks this thread (documented)
        line_app = body.splitlines()
        start_response("200 OK", [("Content-Length", str(len(line_app)))])
        return [b"x" * len(line_app)]

    server = serve(app)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"a\nb\nc\n")
        from conftest import read_until_close

        data = read_until_close(sock)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"xxx")
    finally:
        sock.close()


def test_no_100_continue_for_an_app_that_does_not_read(serve) -> None:
    @streaming_input
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("403 Forbidden", [("Content-Length", "2")])
        return [b"no"]

    server = serve(app)
    data = raw_exchange(server.port, b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                        b"Expect: 100-continue\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 403") and b"100 Continue" not in data


def test_max_body_size_is_enforced_while_streaming(serve) -> None:
    record: dict[str, Any] = {}
    server = serve(digest_app(record), max_body_size=10_000)
    data = post(server.port, b"y" * 50_000, chunked=True)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    # declared too large: refused at the head, the app never called
    data = post(server.port, b"y" * 50_000)
    assert data.startswith(b"HTTP/1.1 413")


def test_when_predicate_and_default_buffering(serve) -> None:
    calls: list[bool] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        streaming = "wsgiplus.input" in environ
        calls.append(streaming)
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    app = streaming_input(inner, when=lambda env: env["PATH_INFO"].startswith("/upload"))
    server = serve(app)
    for path in (b"/upload/x", b"/other"):
        data = raw_exchange(server.port, b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                            b"Connection: close\r\n\r\nabc")
        assert data.endswith(b"abc")
    assert calls == [True, False]


def test_early_response_closes_the_connection(serve) -> None:
    @streaming_input
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        fut = environ["wsgiplus.input"].receive(3)
        yield fut
        start_response("200 OK", [("Content-Length", "3")])
        yield fut.result()

    server = serve(app)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        # keep-alive, but the body is not read to the end: the rest must not become a request
        sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        from conftest import read_until_close

        data = read_until_close(sock, timeout=10)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"abc")
    finally:
        sock.close()


def test_client_gone_while_waiting_for_body(serve) -> None:
    closed = threading.Event()

    @streaming_input
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            fut = environ["wsgiplus.input"].receive()
            yield fut
            fut.result()
            fut = environ["wsgiplus.input"].receive()
            yield fut  # never: the client leaves
        finally:
            closed.set()

    server = serve(app)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
    time.sleep(0.2)
    sock.close()
    assert closed.wait(10)
    assert wait_for(lambda: server.call(lambda: server.server.suspensions.count) == 0)
