"""The HTTP/1.1 connection alone: bytes in, bytes out, through a fake transport, loop and pool."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from fakes import FakeLoop, FakePool, FakeTransport, drive

from wsgiplus.runner.wsgi import environ_template
from wsgiplus.server.connection import Connection
from wsgiplus.server.core import Exchange, HTTPConnection, Server
from wsgiplus.shell.config import Config


class RecordingServer(Server):
    """A server whose access log is a list (a subclass, not an instance attribute: the
    compiled build's classes take no new attributes)."""

    def __init__(self, app: Callable[..., Any], config: Config) -> None:
        super().__init__(app, config)
        self.records: list[dict[str, Any]] = []

    def access(self, conn: Any, record: Any) -> None:  # what the access log gets
        self.records.append({"status": record.status, "bytes": record.bytes_sent,
                             "protocol": record.protocol, "target": record.target,
                             "method": record.method, "path": record.environ.get("PATH_INFO")})


class Bench:
    """One server (never started) with a fake loop and pool, and its connections."""

    def __init__(self, app: Callable[..., Any], **options: Any) -> None:
        options.setdefault("access_log", False)
        self.server = RecordingServer(app, Config(**options))
        self.loop = self.server.loop = FakeLoop()  # type: ignore[assignment]
        self.pool = self.server.pool = FakePool()
        self.records = self.server.records
        self.template = environ_template("test", "80", "http", "", False)

    def connect(self) -> tuple[HTTPConnection, FakeTransport]:
        conn = HTTPConnection(self.server, self.template)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    def drive(self) -> None:
        drive(self.loop, self.pool)


def hello(environ: dict, start_response: Any) -> list[bytes]:
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def responses(raw: bytes) -> list[bytes]:
    """Split a byte stream of Content-Length responses into responses."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        out.append(head + b"\r\n\r\n" + rest[:length])
        raw = rest[length:]
    return out


def test_it_is_a_connection_the_server_holds() -> None:
    b = Bench(hello)
    conn, _ = b.connect()
    assert isinstance(conn, Connection) and conn in b.server.connections
    conn.connection_lost(None)
    assert conn not in b.server.connections


def test_keep_alive_then_close_on_request() -> None:
    b = Bench(hello)
    conn, t = b.connect()
    conn.data_received(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n/one")
    assert b"Connection: close" not in out and not t.closed
    conn.data_received(b"GET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    b.drive()
    out = t.take()
    assert out.endswith(b"/two") and b"Connection: close\r\n" in out and t.closed
    assert [r["target"] for r in b.records] == ["/one", "/two"]
    assert b.records[0] == {"status": 200, "bytes": 4, "protocol": "HTTP/1.1", "target": "/one",
                            "method": "GET", "path": "/one"}


def test_http10_closes_without_keep_alive() -> None:
    b = Bench(hello)
    conn, t = b.connect()
    conn.data_received(b"GET /x HTTP/1.0\r\n\r\n")
    b.drive()
    assert t.take().startswith(b"HTTP/1.1 200 OK") and t.closed


def test_pipelined_responses_keep_request_order_while_the_first_is_suspended() -> None:
    fut: Future = Future()
    calls: list[str] = []

    def app(environ: dict, start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        calls.append(path)
        if path == "/slow":
            yield fut
        body = path.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        yield body

    b = Bench(app)
    conn, t = b.connect()
    conn.data_received(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    assert calls == ["/slow"] and t.out == b""  # /fast waits its turn
    assert not t.reading  # and reading stops behind a queued request
    fut.set_result(None)
    b.drive()
    assert calls == ["/slow", "/fast"]
    assert [r.split(b"\r\n\r\n")[1] for r in responses(t.take())] == [b"/slow", b"/fast"]
    assert t.reading and not t.closed


def test_100_continue_is_sent_when_the_body_is_wanted_and_not_before() -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    b = Bench(app)
    conn, t = b.connect()
    conn.data_received(b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    b.drive()
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.data_received(b"hello")
    b.drive()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"hello")


def test_a_pipelined_expect_continue_waits_for_its_turn() -> None:
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/first":
            yield fut
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        yield body

    b = Bench(app)
    conn, t = b.connect()
    conn.data_received(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
                       b"POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    b.drive()
    assert t.out == b""  # no 100 for a request that is not being answered yet
    fut.set_result(None)
    b.drive()
    out = t.take()
    assert out.endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.data_received(b"ok")
    b.drive()
    assert t.take().endswith(b"\r\n\r\nok")


def test_a_protocol_error_answers_400_with_server_header_and_closes_without_calling_the_app() -> None:
    calls: list[str] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        return hello(environ, start_response)

    b = Bench(app)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    b.drive()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 400 ") and b"\r\nServer: wsgiplus\r\n" in out and t.closed
    assert calls == []


def test_a_valid_request_before_bad_bytes_is_answered_first() -> None:
    b = Bench(hello)
    conn, t = b.connect()
    conn.data_received(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n")
    b.drive()
    first, second = responses(t.take())
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"/ok")
    assert second.startswith(b"HTTP/1.1 400 ") and t.closed


def test_an_app_error_is_a_500_from_the_protocol_counted_in_the_access_record() -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    b = Bench(app)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and b"\r\nServer: wsgiplus\r\n" in out
    body = out.split(b"\r\n\r\n", 1)[1]
    assert b.records[0]["status"] == 500 and b.records[0]["bytes"] == len(body) > 0
    assert t.closed


def test_a_deadline_is_a_504_from_the_protocol_counted_in_the_access_record() -> None:
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        yield fut

    b = Bench(app, request_timeout=2.0)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    b.loop.advance(2.0)
    b.drive()
    out = t.take()
    assert out.startswith(b"HTTP/1.1 504 ") and b"\r\nServer: wsgiplus\r\n" in out and fut.cancelled()
    assert b.records[0]["status"] == 504 and b.records[0]["bytes"] == len(out.split(b"\r\n\r\n", 1)[1])
    assert b.server.active == 0


def test_a_half_received_request_at_shutdown_is_answered_then_the_connection_closes() -> None:
    b = Bench(hello)
    conn, t = b.connect()
    conn.data_received(b"POST /half HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    conn.shutdown()
    b.drive()
    assert not t.closed and t.out == b""  # the client is still sending: never dropped
    conn.data_received(b"defghij")
    b.drive()
    out = t.take()
    assert out.endswith(b"/half") and b"Connection: close\r\n" in out and t.closed


def test_an_idle_keep_alive_connection_closes_after_the_drain_grace_on_shutdown() -> None:
    b = Bench(hello, drain_grace=1.0)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    t.take()
    conn.shutdown()
    assert not t.closed  # a pooling proxy may be sending on it right now
    conn.data_received(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n")  # during the grace: answered, then closed
    b.drive()
    out = t.take()
    assert out.endswith(b"/late") and b"Connection: close\r\n" in out and t.closed


def test_an_idle_connection_closes_when_the_grace_passes_quietly() -> None:
    b = Bench(hello, drain_grace=1.0)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    conn.shutdown()
    b.loop.now += 1.0
    conn.check_timer(b.loop.time())
    assert t.closed


def test_a_head_not_sent_yet_says_connection_close_on_shutdown() -> None:
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        yield fut
        start_response("200 OK", [("Content-Length", "2")])
        yield b"ok"

    b = Bench(app)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    conn.shutdown()
    fut.set_result(None)
    b.drive()
    out = t.take()
    assert out.endswith(b"ok") and b"Connection: close\r\n" in out and t.closed


def test_disconnect_while_suspended_stops_the_app_and_frees_the_exchange() -> None:
    fut: Future = Future()
    closed: list[int] = []

    class Body:
        def __iter__(self) -> Any:
            return iter([fut])

        def close(self) -> None:
            closed.append(1)

    b = Bench(lambda e, s: Body())
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    assert b.server.suspensions.count == 1
    conn.connection_lost(None)
    b.drive()
    assert fut.cancelled() and closed == [1] and b.server.active == 0
    assert b.server.suspensions.count == 0 and not conn.queue


def test_write_backpressure_pauses_the_active_stream_and_resumes_it() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"a"
        yield b"b"

    b = Bench(app)
    conn, t = b.connect()
    conn.pause_writing()  # the transport's buffer is full
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    b.drive()
    ex = conn.queue[0]
    assert ex.paused and ex.runner is not None and ex.runner.state.name == "DRAINING"
    conn.resume_writing()
    b.drive()
    out = t.take()
    assert out.endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")  # chunked, in order


def test_head_timeout_answers_408_from_the_sweep() -> None:
    b = Bench(hello, header_timeout=5.0)
    conn, t = b.connect()
    conn.data_received(b"GET / HTTP/1.1\r\n")
    b.loop.now += 5.0
    conn.check_timer(b.loop.time())
    assert t.take().startswith(b"HTTP/1.1 408 ") and t.closed


def test_max_connections_is_the_servers_and_answers_503() -> None:
    b = Bench(hello, max_connections=1)
    b.connect()
    conn, t = b.connect()
    assert t.take().startswith(b"HTTP/1.1 503 ") and t.closed


def test_the_exchange_sets_every_field_of_a_stream() -> None:
    """``Exchange.__init__`` inlines ``Stream.__init__`` (hot path): it must not drift."""
    from wsgiplus.protocols.http11 import RequestParser
    from wsgiplus.server.streams import Stream

    b = Bench(hello)
    conn, _ = b.connect()
    request = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0]
    ex = Exchange(conn, request, 1024)
    reference = Stream(b.loop, ex.record)  # type: ignore[arg-type]
    assert Stream.FIELDS == getattr(Stream, "__slots__", Stream.FIELDS)  # (no __slots__ when compiled)
    for name in Stream.FIELDS:
        if name != "_lock":
            assert getattr(ex, name) == getattr(reference, name), name
    assert ex._lock is not None and ex._lock is not reference._lock
