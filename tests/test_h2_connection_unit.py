"""The HTTP/2 connection alone: an h2 client's bytes in, frames out, through a fake transport,
loop and pool (tests/fakes.py); nothing runs unless the test drives it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from fakes import FakeLoop, FakePool, FakeTransport, drive

from wsgiplus.runner.wsgi import environ_template
from wsgiplus.server.core import HTTPConnection, Server
from wsgiplus.server.h2 import H2Connection
from wsgiplus.shell.config import Config


class Transport(FakeTransport):
    """What an H2Connection uses beyond the HTTP/1.1 fake: protocol swap and half-close."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.eof = False

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


class Client:
    """A raw h2 client whose bytes go through an HTTPConnection first (prior knowledge)."""

    def __init__(self, bench: Bench, settings: dict | None = None) -> None:
        self.bench = bench
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.transport = Transport()
        first = HTTPConnection(bench.server, bench.template)
        first.connection_made(self.transport)  # type: ignore[arg-type]
        first.data_received(self.h2.data_to_send())
        self.conn: H2Connection = self.transport.protocol
        self.events: list[Any] = []
        self.pump()

    def send(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.conn.data_received(data)

    def pump(self) -> list[Any]:
        """Run everything, hand the server's bytes to the client, repeat until quiet."""
        new: list[Any] = []
        for _ in range(100):
            self.bench.drive()
            data = self.transport.take()
            if not data:
                break
            events = self.h2.receive_data(data)
            new += events
            self.send()
        self.events += new
        return new

    def get(self, path: str, end: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"),
                                   (b":path", path.encode())], end_stream=end)
        self.send()
        return sid

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.events)

    def status(self, sid: int) -> int | None:
        for e in self.events:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                return int(dict(e.headers)[b":status"])
        return None


class _Server(Server):
    """Its access log is a list (a subclass: the compiled build's classes take no new attributes)."""

    def __init__(self, app: Callable[..., Any], config: Config) -> None:
        super().__init__(app, config)
        self.records: list[Any] = []

    def access(self, conn: Any, record: Any) -> None:
        self.records.append((record.protocol, record.status, record.bytes_sent,
                             record.environ.get("SERVER_PROTOCOL")))


class Bench:
    def __init__(self, app: Callable[..., Any], **options: Any) -> None:
        options.setdefault("access_log", False)
        self.server = _Server(app, Config(**options))
        self.loop = self.server.loop = FakeLoop()  # type: ignore[assignment]
        self.pool = self.server.pool = FakePool()
        self.records = self.server.records
        self.template = environ_template("test", "80", "http", "", False)

    def drive(self) -> None:
        drive(self.loop, self.pool)


def hello(environ: dict, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def test_the_preface_hands_the_transport_to_an_h2_connection() -> None:
    bench = Bench(hello)
    client = Client(bench)
    assert isinstance(client.conn, H2Connection)
    assert bench.server.connections == {client.conn}  # replaced, counted once
    sid = client.get("/hi")
    client.pump()
    assert client.status(sid) == 200 and client.body(sid) == b"/hi" and client.ended(sid)
    assert bench.records == [("HTTP/2.0", 200, 3, "HTTP/2")]
    assert not client.conn.streams and not client.conn.proto.streams  # released


def test_streams_suspend_independently_and_the_others_go_on() -> None:
    gate: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/wait":
            yield gate
        start_response("200 OK", [])
        yield environ["PATH_INFO"].encode()

    bench = Bench(app)
    client = Client(bench)
    waiting = client.get("/wait")
    a, b = client.get("/a"), client.get("/b")
    client.pump()
    assert client.ended(a) and client.ended(b) and not client.ended(waiting)
    assert not bench.pool.jobs  # the suspended stream holds no job, no thread
    gate.set_result(None)
    client.pump()
    assert client.body(waiting) == b"/wait" and client.ended(waiting)


def test_backpressure_per_stream_follows_the_window() -> None:
    produced: list[int] = []

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        for i in range(40):
            produced.append(i)
            yield b"x" * 65536

    S = h2.settings.SettingCodes
    bench = Bench(app)
    client = Client(bench, {S.INITIAL_WINDOW_SIZE: 0})
    sid = client.get("/big")
    client.pump()
    stalled = len(produced)
    assert stalled < 10  # parked: not 40 chunks buffered
    stream = client.conn.streams[sid]
    assert stream.paused and stream.runner is not None
    # the client opens the stream and connection windows: everything flows
    for _ in range(200):
        client.h2.increment_flow_control_window(1 << 20, stream_id=sid)
        client.h2.increment_flow_control_window(1 << 20)
        client.send()
        client.pump()
        if client.ended(sid):
            break
    assert len(client.body(sid)) == 40 * 65536 and len(produced) == 40


def test_a_full_transport_stops_the_pump_until_it_drains() -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"y" * 100_000]

    bench = Bench(app)
    client = Client(bench)
    client.conn.pause_writing()
    sid = client.get("/")
    bench.drive()
    assert b"y" * 100 not in client.transport.take()  # nothing framed while paused
    client.conn.resume_writing()
    client.pump()
    for _ in range(10):
        if client.ended(sid):
            break
        client.h2.increment_flow_control_window(65536)
        client.h2.increment_flow_control_window(65536, stream_id=sid)
        client.send()
        client.pump()
    assert len(client.body(sid)) == 100_000 and client.ended(sid)


def test_client_reset_stops_the_app_and_releases_the_stream() -> None:
    closed: list[bool] = []
    gate: Future = Future()

    class Body:
        def __iter__(self) -> Any:
            yield gate
            yield b"never"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        return Body()

    bench = Bench(app)
    client = Client(bench)
    sid = client.get("/")
    client.pump()
    client.h2.reset_stream(sid)
    client.send()
    client.pump()
    assert closed == [True] and gate.cancelled()
    assert not client.conn.streams and not client.conn.proto.streams
    assert bench.server.active == 0


def test_shutdown_sends_goaway_and_finishes_the_stream_in_flight() -> None:
    gate: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        yield gate
        start_response("200 OK", [])
        yield b"done"

    bench = Bench(app)
    client = Client(bench)
    sid = client.get("/")
    client.pump()
    client.conn.shutdown()
    data = client.transport.take()
    assert data[3] == 0x7  # a GOAWAY frame
    assert int.from_bytes(data[9:13], "big") == sid
    assert not client.transport.closed
    gate.set_result(None)
    bench.drive()
    assert b"done" in client.transport.take()
    assert client.transport.closed  # the last stream is done


def test_a_flood_ends_in_goaway_then_a_lingering_close() -> None:
    bench = Bench(hello)
    client = Client(bench)
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    client.conn.data_received(ping * 2000)
    data = client.transport.take()
    assert b"\x00\x00\x00\x0b" in data[-30:]  # GOAWAY ENHANCE_YOUR_CALM (0xb)
    assert client.transport.eof and not client.transport.closed  # write side shut, still reading
    client.conn.data_received(ping)  # dropped
    assert client.transport.take() == b""
    bench.loop.now += 5
    client.conn.check_timer(bench.loop.now)
    assert client.transport.closed


def test_connection_lost_disconnects_every_stream() -> None:
    gate: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        yield gate
        start_response("200 OK", [])
        yield b""

    bench = Bench(app)
    client = Client(bench)
    client.get("/1"), client.get("/2")
    client.pump()
    client.conn.connection_lost(None)
    bench.drive()
    assert gate.cancelled()
    assert bench.server.active == 0 and not bench.server.connections


def test_a_stream_reset_before_its_step_runs_never_calls_the_app() -> None:
    calls: list[str] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    bench = Bench(app)
    client = Client(bench)
    sid = client.get("/reset-me")  # reported and its runner submitted, not yet run
    assert bench.pool.jobs
    client.h2.reset_stream(sid)
    client.send()
    client.pump()
    assert calls == []
    assert not client.conn.streams and bench.server.active == 0
    other = client.get("/other")
    client.pump()
    assert calls == ["/other"] and client.ended(other)


def test_upgrade_h2c_request_with_a_body_stays_http11() -> None:
    bench = Bench(hello)
    transport = Transport()
    conn = HTTPConnection(bench.server, bench.template)
    conn.connection_made(transport)  # type: ignore[arg-type]
    settings = h2.connection.H2Connection().initiate_upgrade_connection().rstrip(b"=")
    conn.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                       b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\nabc")
    bench.drive()
    assert transport.protocol is None and transport.take().startswith(b"HTTP/1.1 200 OK")


def test_a_finished_stream_is_freed_without_the_cyclic_gc() -> None:
    import gc
    import weakref

    class Probe:
        pass

    refs: list[Any] = []

    def app(environ: dict, start_response: Any) -> Any:
        environ["probe"] = probe = Probe()  # freed only if the environ (so stream and runner) is
        refs.append(weakref.ref(probe))
        start_response("200 OK", [])
        yield b"ok"

    gc.disable()
    try:
        bench = Bench(app)
        client = Client(bench)
        sids = [client.get(f"/{i}") for i in range(3)]
        client.pump()
        assert all(client.ended(s) for s in sids)
        assert len(refs) == 3 and all(r() is None for r in refs)
    finally:
        gc.enable()
