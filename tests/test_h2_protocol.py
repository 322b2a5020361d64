"""The sans-I/O HTTP/2 protocol with bytes only: the h2 library is the raw client.

Every attack the issue names has a test here (and again over a real socket
once the connection exists): nothing in this file opens a socket or a thread.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from wsgiplus.protocols.h2 import (
    ConnectionTerminated,
    ErrorCodes,
    H2Limits,
    H2Protocol,
    RequestData,
    RequestEnded,
    RequestReceived,
    StreamReset,
    valid_upgrade_settings,
)
from wsgiplus.runner.wsgi import BodyBuffer, build_environ, environ_template

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.com"), (b":path", b"/")]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Pair:
    """A raw h2 client wired to a server H2Protocol by plain byte shuttling."""

    def __init__(self, limits: H2Limits | None = None, client_settings: dict | None = None) -> None:
        self.clock = Clock()
        self.server = H2Protocol(limits, clock=self.clock)
        self.server.initiate()
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, header_encoding=None,
                validate_outbound_headers=False, normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.client_events: list = []
        self.events = self.send(b"")  # settings both ways
        self.pump()

    def send(self, raw: bytes = b"") -> list:
        """Client bytes (queued + ``raw``) to the server; returns the server's events."""
        data = self.client.data_to_send() + raw
        return self.server.receive_data(data) if data else []

    def pump(self) -> list:
        """Server bytes to the client; returns the client's events (also kept)."""
        data = self.server.data_to_send()
        if not data:
            return []
        events = self.client.receive_data(data)
        self.client_events += events
        self.send()  # the client's ACKs and window updates back
        return events

    def request(self, headers: list = GET, end: bool = True, sid: int | None = None) -> int:
        sid = sid or self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream=end)
        return sid

    def of(self, kind: type, events: list | None = None) -> list:
        return [e for e in (self.client_events if events is None else events) if isinstance(e, kind)]


def frames(*fs) -> bytes:
    return b"".join(f.serialize() for f in fs)


# -- requests and the environ ---------------------------------------------------


def test_get_request_and_response() -> None:
    p = Pair()
    sid = p.request([*GET[:3], (b":path", b"/a%20b?x=1&y=2"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
                     (b"user-agent", b"raw")])
    events = p.send()
    (req,) = [e for e in events if isinstance(e, RequestReceived)]
    assert req.stream_id == sid and req.ended
    environ = build_environ(environ_template("127.0.0.1", "8000", "http", "", False), req.request, None,
                            ("127.0.0.1", 5000))
    assert environ["SERVER_PROTOCOL"] == "HTTP/2"
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/a b"
    assert environ["QUERY_STRING"] == "x=1&y=2"
    assert environ["HTTP_HOST"] == "example.com"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_USER_AGENT"] == "raw"
    assert "CONTENT_LENGTH" not in environ
    assert p.server.send_headers(sid, 200, [(b"content-type", b"text/plain")])
    assert p.server.send_data(sid, b"hello", end_stream=True)
    got = p.pump()
    (resp,) = p.of(h2.events.ResponseReceived, got)
    assert dict(resp.headers)[b":status"] == b"200"
    assert b"".join(e.data for e in p.of(h2.events.DataReceived, got)) == b"hello"
    assert p.of(h2.events.StreamEnded, got)
    p.server.release(sid)
    assert not p.server.streams


def test_body_without_content_length_gets_its_size_and_trailers_come_apart() -> None:
    p = Pair()
    sid = p.request([(b":method", b"POST"), *GET[1:]], end=False)
    events = p.send()
    (req,) = p.of(RequestReceived, events)
    assert not req.ended and req.request.has_body
    p.client.send_data(sid, b"abc")
    p.client.send_data(sid, b"def")
    p.client.send_headers(sid, [(b"x-checksum", b"1234")], end_stream=True)
    events = p.send()
    assert [type(e) for e in events] == [RequestData, RequestData, RequestEnded]
    assert events[2].trailers == [(b"x-checksum", b"1234")]
    body = BodyBuffer(1024)
    for e in events[:2]:
        body.write(e.data)
    environ = build_environ(environ_template("h", "1", "http", "", False), req.request, body.stream(), None)
    assert environ["CONTENT_LENGTH"] == "6"
    assert environ["wsgi.input"].read() == b"abcdef"
    assert not any(k.startswith("HTTP_X_CHECKSUM") for k in environ)  # trailers are not head fields


def test_host_header_without_authority_and_connect() -> None:
    p = Pair()
    p.request([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h.example")])
    (req,) = p.of(RequestReceived, p.send())
    assert req.request.headers[0] == (b"host", b"h.example")
    p.request([(b":method", b"CONNECT"), (b":authority", b"upstream:443")])
    (req,) = p.of(RequestReceived, p.send())
    assert req.request.method == "CONNECT"


@pytest.mark.parametrize(
    "headers",
    [
        [*GET, (b"connection", b"keep-alive")],  # RFC 9113 §8.2.2
        [*GET, (b"transfer-encoding", b"chunked")],
        [*GET, (b"upgrade", b"h2c")],
        [*GET, (b"keep-alive", b"5")],
        [*GET, (b"proxy-connection", b"x")],
        [*GET, (b"te", b"gzip")],
        [*GET, (b"X-Upper", b"1")],  # §8.2: uppercase names
        [*GET, (b"bad name", b"1")],
        [*GET, (b"x-v", b"a\r\nb")],  # §8.2.1
        [*GET, (b"x-v", b" padded")],
        [(b"x-first", b"1"), *GET],  # §8.3: pseudo after regular
        [*GET, (b":method", b"POST")],  # repeated pseudo
        [*GET, (b":status", b"200")],  # response pseudo in a request
        [*GET, (b":protocol", b"websocket")],
        GET[:3],  # no :path
        [(b":method", b"GET"), (b":authority", b"x"), (b":path", b"/")],  # no :scheme
        [*GET[:3], (b":path", b"")],
        [*GET[:3], (b":path", b"no-slash")],
        [*GET[:3], (b":path", b"/a b")],
        [*GET, (b"host", b"other.example")],  # host differs from :authority
        [(b":method", b"CONNECT"), (b":authority", b"x:1"), (b":path", b"/")],
    ],
)
def test_malformed_request_is_a_stream_error(headers: list) -> None:
    p = Pair()
    bad = p.request(headers)
    good = p.request()
    events = p.send()
    assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == [good]
    p.pump()
    resets = p.of(h2.events.StreamReset)
    assert [(r.stream_id, r.error_code) for r in resets] == [(bad, ErrorCodes.PROTOCOL_ERROR)]
    assert not p.of(h2.events.ConnectionTerminated)


@pytest.mark.parametrize("lengths", [[b"1", b"2"], [b"x"], [b"5"]])
def test_content_length_errors_end_the_connection(lengths: list) -> None:
    # h2 checks content-length itself, as a connection error (RFC 9113 §5.4.1 allows it)
    p = Pair()
    sid = p.request([(b":method", b"POST"), *GET[1:], *[(b"content-length", v) for v in lengths]], end=False)
    p.client.send_data(sid, b"abc", end_stream=True)
    events = p.send()
    assert not p.of(RequestEnded, events)
    assert [e.error_code for e in events if isinstance(e, ConnectionTerminated)] == [ErrorCodes.PROTOCOL_ERROR]


def test_expect_continue_is_answered_and_too_large_body_gets_413() -> None:
    p = Pair(H2Limits(max_body_size=10))
    sid = p.request([(b":method", b"POST"), *GET[1:], (b"expect", b"100-continue")], end=False)
    assert p.of(RequestReceived, p.send())
    got = p.pump()
    assert p.of(h2.events.InformationalResponseReceived, got)
    p.client.send_data(sid, b"x" * 11)
    events = p.send()
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, sid)]
    got = p.pump()
    (resp,) = p.of(h2.events.ResponseReceived, got)
    assert dict(resp.headers)[b":status"] == b"413"
    # declared too large: refused before the user hears of it
    p.request([(b":method", b"POST"), *GET[1:], (b"content-length", b"11")], end=False)
    assert p.send() == []
    assert [dict(e.headers)[b":status"] for e in p.of(h2.events.ResponseReceived, p.pump())] == [b"413"]


# -- output flow control and backpressure -----------------------------------------


def test_output_respects_the_stream_window_and_reports_writable() -> None:
    S = h2.settings.SettingCodes
    p = Pair(H2Limits(stream_buffer_high=1000, stream_buffer_low=100), {S.INITIAL_WINDOW_SIZE: 300})
    sid = p.request()
    p.send()
    p.server.send_headers(sid, 200, [])
    p.server.send_data(sid, b"x" * 2000)
    assert not p.server.writable(sid)
    got = p.pump()
    assert sum(len(e.data) for e in p.of(h2.events.DataReceived, got)) == 300
    assert p.server.buffered(sid) == 1700 and p.server.pop_writable() == []
    for _ in range(10):  # the client reads: window updates let the rest out
        for e in p.of(h2.events.DataReceived, got):
            p.client.acknowledge_received_data(e.flow_controlled_length, sid)
        p.client.increment_flow_control_window(300, stream_id=sid)
        p.send()
        got = p.pump()
        if p.server.buffered(sid) <= 100:
            break
    assert p.server.pop_writable() == [sid]
    assert p.server.writable(sid)


def test_output_respects_the_connection_window_across_streams() -> None:
    p = Pair()
    a, b = p.request(), p.request()
    p.send()
    for sid in (a, b):
        p.server.send_headers(sid, 200, [])
        p.server.send_data(sid, b"y" * 60000, end_stream=True)
    # the client never acknowledges: 65535 bytes is all the connection window allows
    data = p.server.data_to_send()
    client = p.client
    events = client.receive_data(data)
    sent = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
    assert sent == 65535
    per_stream = {sid: sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
                  for sid in (a, b)}
    assert per_stream[a] > 0 and per_stream[b] > 0  # round-robin, not one stream first
    assert p.server.data_to_send() == b""
    client.increment_flow_control_window(65535)
    p.send()
    events = client.receive_data(p.server.data_to_send())
    assert {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)} == {a, b}


def test_zero_window_forever_is_bounded_and_times_out() -> None:
    S = h2.settings.SettingCodes
    p = Pair(H2Limits(window_timeout=30.0, ping_timeout=None), {S.INITIAL_WINDOW_SIZE: 0})
    sid = p.request()
    p.send()
    p.server.send_headers(sid, 200, [])
    p.server.send_data(sid, b"z" * 100_000)
    assert not p.server.writable(sid)  # the runner parks: the buffer stops growing
    p.pump()
    assert p.server.buffered(sid) == 100_000
    p.clock.now += 29
    assert p.server.tick() == []
    p.clock.now += 2
    events = p.server.tick()
    assert [(type(e), e.stream_id, e.error_code) for e in events] == [(StreamReset, sid, ErrorCodes.CANCEL)]
    p.pump()
    assert [(r.stream_id, r.error_code) for r in p.of(h2.events.StreamReset)] == [(sid, ErrorCodes.CANCEL)]
    assert p.server.buffered(sid) == 0
    p.server.release(sid)
    assert not p.server.streams


def test_a_request_body_that_stops_arriving_gets_408() -> None:
    p = Pair(H2Limits(body_timeout=30.0, ping_timeout=None))
    sid = p.request([(b":method", b"POST"), *GET[1:]], end=False)
    assert p.of(RequestReceived, p.send())
    p.clock.now += 20
    p.client.send_data(sid, b"some")
    assert p.of(RequestData, p.send())
    p.clock.now += 29
    assert p.server.tick() == []
    p.clock.now += 2
    events = p.server.tick()
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, sid)]
    got = p.pump()
    assert [dict(e.headers)[b":status"] for e in p.of(h2.events.ResponseReceived, got)] == [b"408"]
    p.server.release(sid)
    assert not p.server.streams


def test_a_request_body_trickling_below_the_minimum_rate_gets_408() -> None:
    p = Pair(H2Limits(body_timeout=30.0, body_min_rate=100, ping_timeout=None))
    sid = p.request([(b":method", b"POST"), *GET[1:]], end=False)
    assert p.of(RequestReceived, p.send())
    for _ in range(20):  # 1 byte every 20 s: never 30 s without data, but 0.05 bytes/s
        p.clock.now += 20
        p.client.send_data(sid, b"x")
        p.send()
        events = p.server.tick()
        if events:
            break
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, sid)]
    assert p.clock.now - 100.0 <= 40  # cut at 30 s + 1 byte / 100 per s, not after 20 trickles


def test_reset_by_the_app_side_and_writes_after_it_are_refused() -> None:
    p = Pair()
    sid = p.request()
    p.send()
    p.server.send_headers(sid, 200, [])
    p.server.reset_stream(sid)
    assert not p.server.send_data(sid, b"late")
    p.pump()
    assert [(r.stream_id, r.error_code) for r in p.of(h2.events.StreamReset)] == [(sid, ErrorCodes.INTERNAL_ERROR)]


# -- shutdown and timers ------------------------------------------------------------


def parse_frames(data: bytes) -> list:
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def test_graceful_goaway_finishes_streams_in_flight_and_refuses_later_ones() -> None:
    p = Pair()
    first = p.request()
    p.send()
    p.server.goaway()
    (goaway,) = [f for f in parse_frames(p.server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert goaway.last_stream_id == first and goaway.error_code == ErrorCodes.NO_ERROR
    assert not p.server.finished
    # the in-flight stream is still answered
    p.server.send_headers(first, 200, [])
    p.server.send_data(first, b"done", end_stream=True)
    sent = parse_frames(p.server.data_to_send())
    assert [(type(f), f.stream_id) for f in sent] == [(HeadersFrame, first), (DataFrame, first)]
    assert "END_STREAM" in sent[-1].flags
    p.server.release(first)
    assert p.server.finished


def test_goaway_refuses_streams_opened_after_it() -> None:
    p = Pair()
    first = p.request()
    p.send()
    p.server.goaway()
    later = first + 2
    # the client has not seen the GOAWAY yet and opens another stream
    events = p.server.receive_data(frames(HeadersFrame(later, data=hpack.Encoder().encode(GET),
                                                       flags=["END_HEADERS", "END_STREAM"])))
    assert events == []
    data = p.server.data_to_send()
    assert RstStreamFrame(later, error_code=ErrorCodes.REFUSED_STREAM).serialize() in data


def test_idle_timeout_and_ping_timeout() -> None:
    p = Pair(H2Limits(idle_timeout=60.0, ping_timeout=20.0))
    p.clock.now += 61
    (ev,) = p.server.tick()
    assert isinstance(ev, ConnectionTerminated) and ev.reason == "idle"
    p = Pair(H2Limits(idle_timeout=60.0, ping_timeout=20.0))
    sid = p.request()
    p.send()
    p.clock.now += 21
    assert p.server.tick() == []
    got = p.pump()  # the PING; the raw client ACKs it
    assert p.of(h2.events.PingAckReceived, got) == [] and p.server._ping_sent is None
    p.clock.now += 21
    p.server.tick()
    p.server.data_to_send()  # a PING nobody answers
    p.clock.now += 21
    (ev,) = p.server.tick()
    assert isinstance(ev, ConnectionTerminated) and ev.reason == "ping timeout"
    assert sid in p.server.streams


# -- attacks ---------------------------------------------------------------------


def test_rapid_reset_never_reports_streams_and_ends_in_enhance_your_calm() -> None:
    p = Pair()
    enc = p.client.encoder
    reported = 0
    terminated = None
    sid = 1
    for _ in range(100):  # bounded: the budget trips long before
        raw = b""
        for _ in range(20):
            raw += frames(HeadersFrame(sid, data=enc.encode(GET), flags=["END_HEADERS", "END_STREAM"]),
                          RstStreamFrame(sid, error_code=ErrorCodes.CANCEL))
            sid += 2
        events = p.server.receive_data(raw)
        reported += len([e for e in events if isinstance(e, RequestReceived)])
        terms = [e for e in events if isinstance(e, ConnectionTerminated)]
        if terms:
            terminated = terms[0]
            break
    assert reported == 0  # reset in the same read as the request: the app never runs
    assert terminated is not None and terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert sid < 2 * 400  # ~200 resets, not unbounded
    assert p.server.receive_data(frames(PingFrame(0))) == []  # closed: reads nothing more


def test_streams_reset_after_they_were_reported_still_count_against_concurrency() -> None:
    p = Pair(H2Limits(max_concurrent_streams=10))
    enc = hpack.Encoder()
    sids = list(range(1, 21, 2))
    events = p.server.receive_data(b"".join(
        frames(HeadersFrame(s, data=enc.encode(GET), flags=["END_HEADERS", "END_STREAM"])) for s in sids))
    assert len(p.of(RequestReceived, events)) == 10
    # the client resets them all; their apps are still being answered (not released)
    events = p.server.receive_data(b"".join(frames(RstStreamFrame(s, error_code=8)) for s in sids))
    assert [e.stream_id for e in events if isinstance(e, StreamReset)] == sids
    events = p.server.receive_data(frames(HeadersFrame(21, data=enc.encode(GET), flags=["END_HEADERS", "END_STREAM"])))
    assert events == []  # refused: 10 apps still running on this connection
    assert RstStreamFrame(21, error_code=ErrorCodes.REFUSED_STREAM).serialize() in p.server.data_to_send()
    for s in sids:
        p.server.release(s)
    events = p.server.receive_data(frames(HeadersFrame(23, data=enc.encode(GET), flags=["END_HEADERS", "END_STREAM"])))
    assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == [23]


def test_continuation_flood_is_bounded() -> None:
    p = Pair(H2Limits(max_header_list_size=16384))
    block = hpack.Encoder().encode(GET)
    raw = frames(HeadersFrame(1, data=block))  # no END_HEADERS
    events: list = []
    fed = 0
    for _ in range(1000):
        chunk = frames(ContinuationFrame(1, data=b"\x00" * 1000))
        fed += len(chunk)
        events = p.server.receive_data(raw + chunk)
        raw = b""
        if events:
            break
    (ev,) = events
    assert isinstance(ev, ConnectionTerminated) and ev.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert fed < 20_000  # stopped at the header list size, not h2's 64 frames
    assert b"CONTINUATION" in p.server.data_to_send()  # the GOAWAY's debug data says why


def test_many_empty_continuation_frames_are_a_flood() -> None:
    p = Pair()
    raw = frames(HeadersFrame(1, data=hpack.Encoder().encode(GET)))
    raw += frames(*[ContinuationFrame(1, data=b"") for _ in range(2000)])
    events = p.server.receive_data(raw)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert events[0].error_code in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.PROTOCOL_ERROR)


def test_hpack_bomb_is_refused() -> None:
    p = Pair(H2Limits(max_header_list_size=65536))
    enc = hpack.Encoder()
    first = enc.encode([*GET, (b"x-bomb", b"A" * 4000)])  # into the dynamic table
    events = p.server.receive_data(frames(HeadersFrame(1, data=first, flags=["END_HEADERS", "END_STREAM"])))
    assert p.of(RequestReceived, events)
    # each repetition is one byte on the wire and 4 KB decoded
    bomb = enc.encode([*GET, *[(b"x-bomb", b"A" * 4000)] * 100])
    assert len(bomb) < 200
    events = p.server.receive_data(frames(HeadersFrame(3, data=bomb, flags=["END_HEADERS", "END_STREAM"])))
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert events[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM


@pytest.mark.parametrize(
    "name,frame",
    [
        ("SETTINGS", lambda: SettingsFrame(0)),
        ("PING", lambda: PingFrame(0, opaque_data=b"12345678")),
        ("empty DATA", lambda: DataFrame(1, data=b"")),
        ("WINDOW_UPDATE", lambda: WindowUpdateFrame(0, window_increment=1)),
        ("PRIORITY", lambda: PriorityFrame(3, depends_on=0, stream_weight=1)),
    ],
)
def test_control_frame_floods_end_in_enhance_your_calm(name: str, frame) -> None:
    p = Pair()
    p.request([(b":method", b"POST"), *GET[1:]], end=False)  # an open stream for DATA
    p.send()
    p.pump()
    one = frame().serialize()
    sent = 0
    events: list = []
    for _ in range(100):  # 100 x 100 frames at most
        events = p.server.receive_data(one * 100)
        sent += 100
        if any(isinstance(e, ConnectionTerminated) for e in events):
            break
    (ev,) = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert ev.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert sent <= 1200
    # the answers to the flood are bounded too: not one ACK per frame sent
    assert len(p.server.data_to_send()) < 1100 * 17 + 1000


def test_a_well_behaved_client_is_not_a_flood() -> None:
    p = Pair()
    for i in range(300):  # 300 request/response exchanges with a ping and settings each
        sid = p.request()
        p.client.ping(b"%08d" % i)
        events = p.send()
        assert p.of(RequestReceived, events)
        p.server.send_headers(sid, 200, [])
        p.server.send_data(sid, b"ok", end_stream=True)
        p.pump()
        p.server.release(sid)
        p.clock.now += 0.05
    assert not p.server.closed


def test_upgrade_makes_the_request_stream_1() -> None:
    from wsgiplus.protocols.http11 import Request

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    settings = client.initiate_upgrade_connection().rstrip(b"=")  # unpadded, as on the wire
    server = H2Protocol(clock=Clock())
    request = Request("GET", b"/up", b"/up", b"", "2", [(b"host", b"x")], True, False, None, False, None)
    server.initiate_upgrade(settings, request)
    client.receive_data(server.data_to_send())
    assert server.send_headers(1, 200, [])
    assert server.send_data(1, b"upgraded", end_stream=True)
    events = client.receive_data(server.data_to_send())
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"upgraded"
    # a reset of stream 1 by the client is reported like any other
    server = H2Protocol(clock=Clock())
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server.initiate_upgrade(client.initiate_upgrade_connection(), request)
    client.reset_stream(1)
    events = server.receive_data(client.data_to_send())  # its preface, SETTINGS and the RST_STREAM
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, 1)]
    assert valid_upgrade_settings(settings) and not valid_upgrade_settings(b"!!!") and not valid_upgrade_settings(b"AAAA")


def test_config_fields_shape_the_limits() -> None:
    from wsgiplus.shell.cli import build_parser, config_from_args
    from wsgiplus.shell.config import Config

    args = build_parser().parse_args(["--no-http2", "--h2-max-concurrent-streams", "250",
                                      "--h2-max-header-list-size", "32k", "--h2-idle-timeout", "0",
                                      "--h2-window-timeout", "5", "--max-body-size", "1m"])
    config = config_from_args(args, {})
    limits = config.h2_limits
    assert config.http2 is False and Config().http2 is True
    assert (limits.max_concurrent_streams, limits.max_header_list_size, limits.idle_timeout,
            limits.window_timeout, limits.max_body_size) == (250, 32768, None, 5.0, 1024 * 1024)
    for bad in ({"h2_max_concurrent_streams": 0}, {"h2_initial_window_size": 2**31},
                {"h2_max_header_list_size": 10}):
        with pytest.raises(ValueError):
            Config(**bad).validate()
