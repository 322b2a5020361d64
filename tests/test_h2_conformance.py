"""RFC 9113 §3-§8, the rules a server must enforce, one test each, against a real server.

The client is raw frames (hyperframe + hpack, no client state machine), so
every broken shape can be sent; the cases follow h2spec's. A connection error
must come as a GOAWAY with the error code the RFC names, a stream error as an
RST_STREAM on that stream (with the connection still serving).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2client import PREFACE, RawH2
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from wsgiplus.testing import ServerThread

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]
POST = [(b":method", b"POST"), *GET[1:]]


def app(environ: dict, start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok:" + body]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ServerThread(app, h2_idle_timeout=30.0).start()
    yield server.port
    server.stop()


@pytest.fixture
def c(port: int) -> Iterator[RawH2]:
    client = RawH2(port)
    yield client
    client.close()


def raw_frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


def conn_error(c: RawH2, *codes: int) -> None:
    goaway = c.goaway()
    assert goaway is not None, f"no GOAWAY; got {c.frames}"
    assert goaway.error_code in codes, f"GOAWAY {ErrorCodes(goaway.error_code).name}, wanted {codes}"
    assert c.wait(lambda: c.closed), "the connection stays open after a connection error"


def stream_error(c: RawH2, sid: int, *codes: int) -> None:
    reset = c.reset(sid)
    assert reset is not None, f"no RST_STREAM on {sid}; got {c.frames}"
    assert reset.error_code in codes, f"RST_STREAM {ErrorCodes(reset.error_code).name}, wanted {codes}"
    still_serving(c)


def still_serving(c: RawH2) -> None:
    sid = max([f.stream_id for f in c.frames] + [0]) + 101
    sid += sid % 2 == 0
    c.send(c.headers(sid))
    assert c.response(sid)[0] == 200, "the connection no longer serves"


# -- §3.4 the connection preface -------------------------------------------------------


def test_3_4_server_preface_is_settings_first(port: int) -> None:
    c = RawH2(port, preface=False)
    c.send_raw(PREFACE + SettingsFrame(0).serialize())
    c.wait(lambda: bool(c.frames))
    assert isinstance(c.frames[0], SettingsFrame) and "ACK" not in c.frames[0].flags
    c.close()


def test_3_4_invalid_preface_is_a_connection_error(port: int) -> None:
    c = RawH2(port, preface=False)
    c.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + SettingsFrame(0).serialize())
    goaway = c.goaway()
    assert (goaway is None and c.closed) or goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    assert c.wait(lambda: c.closed)
    c.close()


def test_3_4_first_frame_must_be_settings(port: int) -> None:
    c = RawH2(port, preface=False)
    c.send_raw(PREFACE + PingFrame(0, opaque_data=b"12345678").serialize())
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)
    c.close()


# -- §4 frames -------------------------------------------------------------------------------


def test_4_1_unknown_frame_types_are_ignored(c: RawH2) -> None:
    c.send_raw(raw_frame(0xEE, 0, 0, b"whatever"))
    still_serving(c)


def test_4_1_unknown_flags_are_ignored(c: RawH2) -> None:
    c.send_raw(raw_frame(0x6, 0x80, 0, b"12345678"))  # PING with an undefined flag
    assert c.wait(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in c.frames))


def test_4_2_frame_over_max_frame_size_is_frame_size_error(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False))
    c.send(DataFrame(1, data=b"x" * 16385))
    conn_error(c, ErrorCodes.FRAME_SIZE_ERROR)


def test_4_3_undecodable_header_block_is_compression_error(c: RawH2) -> None:
    c.send(HeadersFrame(1, data=b"\xff\xff\xff\xff\xff", flags=["END_HEADERS", "END_STREAM"]))
    conn_error(c, ErrorCodes.COMPRESSION_ERROR)


def test_4_3_header_block_interleaved_with_another_frame(c: RawH2) -> None:
    c.send(c.headers(1, end_headers=False), DataFrame(1, data=b"x"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


# -- §5.1 stream states ------------------------------------------------------------------------


def test_5_1_data_on_an_idle_stream(c: RawH2) -> None:
    c.send(DataFrame(1, data=b"x", flags=["END_STREAM"]))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_rst_stream_on_an_idle_stream(c: RawH2) -> None:
    c.send(RstStreamFrame(1, error_code=ErrorCodes.CANCEL))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_window_update_on_an_idle_stream(c: RawH2) -> None:
    c.send(WindowUpdateFrame(1, window_increment=100))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_data_on_a_half_closed_remote_stream(c: RawH2) -> None:
    c.send(c.headers(1, end_stream=True), DataFrame(1, data=b"x"))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.STREAM_CLOSED) or \
        (goaway is not None and goaway.error_code == ErrorCodes.STREAM_CLOSED)


def test_5_1_headers_on_a_half_closed_remote_stream(c: RawH2) -> None:
    c.send(c.headers(1, end_stream=True), c.headers(1, end_stream=True))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.STREAM_CLOSED) or \
        (goaway is not None and goaway.error_code in (ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR))


def test_5_1_data_on_a_closed_stream(c: RawH2) -> None:
    c.send(c.headers(1))
    assert c.response(1)[0] == 200
    c.send(DataFrame(1, data=b"late"))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.STREAM_CLOSED) or \
        (goaway is not None and goaway.error_code == ErrorCodes.STREAM_CLOSED)


def test_5_1_1_even_stream_id_from_a_client(c: RawH2) -> None:
    c.send(c.headers(2))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_5_1_1_stream_id_lower_than_a_previous_one(c: RawH2) -> None:
    c.send(c.headers(5))
    assert c.response(5)[0] == 200
    c.send(c.headers(3))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED)


def test_5_1_2_exceeding_max_concurrent_streams(port: int) -> None:
    server = ServerThread(lambda e, s: iter([_hold(e, s)]), h2_max_concurrent_streams=2).start()
    try:
        c = RawH2(server.port)
        c.send(c.headers(1, POST, end_stream=False), c.headers(3, POST, end_stream=False),
               c.headers(5, POST, end_stream=False))
        reset = c.reset(5)
        goaway = c.goaway(1.0) if reset is None else None
        assert (reset is not None and reset.error_code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM)) \
            or (goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR)
        c.close()
    finally:
        server.stop()


def _hold(environ: dict, start_response: Any) -> bytes:
    start_response("200 OK", [])
    return b""


def test_5_3_1_stream_depending_on_itself(c: RawH2) -> None:
    # h2 makes it a connection error (RFC 9113 §5.4.1 allows that for any stream error)
    frame = c.headers(1, depends_on=1, stream_weight=16)
    frame.flags.add("PRIORITY")
    c.send(frame)
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR) or \
        (goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR)


def test_5_5_unknown_settings_are_ignored(c: RawH2) -> None:
    c.send_raw(raw_frame(0x4, 0, 0, struct.pack(">HI", 0xFF, 7)))
    assert c.wait(lambda: sum(1 for f in c.frames if isinstance(f, SettingsFrame) and "ACK" in f.flags) >= 2)
    still_serving(c)


# -- §6 frame definitions ------------------------------------------------------------------------


def test_6_1_data_on_stream_0(c: RawH2) -> None:
    c.send_raw(raw_frame(0x0, 0, 0, b"x"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_1_padding_longer_than_the_payload(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False))
    c.send_raw(raw_frame(0x0, 0x8, 1, bytes([10]) + b"abc"))  # PADDED, pad length 10 > payload
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_2_headers_on_stream_0(c: RawH2) -> None:
    c.send_raw(raw_frame(0x1, 0x5, 0, c.encoder.encode(GET)))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_3_priority_on_stream_0(c: RawH2) -> None:
    c.send_raw(raw_frame(0x2, 0, 0, b"\x00\x00\x00\x01\x10"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_3_priority_of_the_wrong_length(c: RawH2) -> None:
    c.send_raw(raw_frame(0x2, 0, 1, b"\x00\x00\x00\x03"))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.FRAME_SIZE_ERROR) or \
        (goaway is not None and goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR)


def test_6_4_rst_stream_on_stream_0(c: RawH2) -> None:
    c.send_raw(raw_frame(0x3, 0, 0, b"\x00\x00\x00\x08"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_4_rst_stream_of_the_wrong_length(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False))
    c.send_raw(raw_frame(0x3, 0, 1, b"\x00\x00\x08"))
    conn_error(c, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_5_settings_ack_with_a_payload(c: RawH2) -> None:
    c.send_raw(raw_frame(0x4, 0x1, 0, struct.pack(">HI", 0x3, 100)))
    conn_error(c, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_5_settings_on_a_stream(c: RawH2) -> None:
    c.send_raw(raw_frame(0x4, 0, 1, b""))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_5_settings_length_not_a_multiple_of_6(c: RawH2) -> None:
    c.send_raw(raw_frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00"))
    conn_error(c, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_5_2_enable_push_other_than_0_or_1(c: RawH2) -> None:
    c.send_raw(raw_frame(0x4, 0, 0, struct.pack(">HI", 0x2, 2)))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_5_2_initial_window_size_too_large(c: RawH2) -> None:
    c.send_raw(raw_frame(0x4, 0, 0, struct.pack(">HI", 0x4, 2**31)))
    conn_error(c, ErrorCodes.FLOW_CONTROL_ERROR)


@pytest.mark.parametrize("size", [16383, 2**24])
def test_6_5_2_max_frame_size_out_of_range(c: RawH2, size: int) -> None:
    c.send_raw(raw_frame(0x4, 0, 0, struct.pack(">HI", 0x5, size)))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_5_3_settings_are_acknowledged(c: RawH2) -> None:
    c.send(SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 10}))
    assert c.wait(lambda: sum(1 for f in c.frames if isinstance(f, SettingsFrame) and "ACK" in f.flags) >= 2)


def test_6_7_ping_is_answered_with_the_same_payload(c: RawH2) -> None:
    c.send(PingFrame(0, opaque_data=b"wsgi+h2!"))
    assert c.wait(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == b"wsgi+h2!"
                              for f in c.frames))


def test_6_7_ping_on_a_stream(c: RawH2) -> None:
    c.send_raw(raw_frame(0x6, 0, 1, b"12345678"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_7_ping_of_the_wrong_length(c: RawH2) -> None:
    c.send_raw(raw_frame(0x6, 0, 0, b"123456"))
    conn_error(c, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_8_goaway_on_a_stream(c: RawH2) -> None:
    c.send_raw(raw_frame(0x7, 0, 1, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_9_window_update_of_zero_on_the_connection(c: RawH2) -> None:
    c.send_raw(raw_frame(0x8, 0, 0, b"\x00\x00\x00\x00"))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_9_window_update_of_zero_on_a_stream(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False))
    c.send_raw(raw_frame(0x8, 0, 1, b"\x00\x00\x00\x00"))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR) or \
        (goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR)


def test_6_9_window_update_of_the_wrong_length(c: RawH2) -> None:
    c.send_raw(raw_frame(0x8, 0, 0, b"\x00\x00\x01"))
    conn_error(c, ErrorCodes.FRAME_SIZE_ERROR)


def test_6_9_1_connection_window_over_2_31_minus_1(c: RawH2) -> None:
    c.send(WindowUpdateFrame(0, window_increment=2**31 - 1))
    conn_error(c, ErrorCodes.FLOW_CONTROL_ERROR)


def test_6_9_1_stream_window_over_2_31_minus_1(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False), WindowUpdateFrame(1, window_increment=2**31 - 1))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.FLOW_CONTROL_ERROR) or \
        (goaway is not None and goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR)


def test_6_9_1_data_beyond_the_servers_window(port: int) -> None:
    server = ServerThread(app, h2_initial_window_size=1024, h2_connection_window_size=65535).start()
    try:
        c = RawH2(server.port)
        c.send(c.headers(1, POST, end_stream=False))
        c.send(*[DataFrame(1, data=b"x" * 16384) for _ in range(5)])  # 80 KB into a 1 KB window
        reset = c.reset(1)
        goaway = c.goaway(1.0) if reset is None else None
        assert (reset is not None and reset.error_code == ErrorCodes.FLOW_CONTROL_ERROR) or \
            (goaway is not None and goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR)
        c.close()
    finally:
        server.stop()


def test_6_9_2_initial_window_size_governs_the_servers_output(port: int) -> None:
    big = b"y" * 100_000

    def large(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [big]

    server = ServerThread(large).start()
    try:
        c = RawH2(server.port)
        c.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 100}))
        c.send(c.headers(1))
        c.wait(lambda: sum(len(f.data) for f in c.frames if isinstance(f, DataFrame)) >= 100, 5)
        c.read_once(0.3)
        assert sum(len(f.data) for f in c.frames if isinstance(f, DataFrame)) == 100
        c.send(WindowUpdateFrame(1, window_increment=200_000), WindowUpdateFrame(0, window_increment=200_000))
        assert c.response(1) == (200, big)
        c.close()
    finally:
        server.stop()


def test_6_10_continuation_without_headers(c: RawH2) -> None:
    c.send(ContinuationFrame(1, data=c.encoder.encode(GET), flags=["END_HEADERS"]))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_10_continuation_on_another_stream(c: RawH2) -> None:
    block = c.encoder.encode(GET)
    c.send(HeadersFrame(1, data=block[:3], flags=["END_STREAM"]),
           ContinuationFrame(3, data=block[3:], flags=["END_HEADERS"]))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_6_10_header_block_over_continuation_is_one_request(c: RawH2) -> None:
    block = c.encoder.encode(GET)
    c.send(HeadersFrame(1, data=block[:2], flags=["END_STREAM"]),
           ContinuationFrame(1, data=block[2:4]), ContinuationFrame(1, data=block[4:], flags=["END_HEADERS"]))
    assert c.response(1)[0] == 200


# -- §8 HTTP semantics -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([*GET, (b"X-Upper", b"1")], id="8.2-uppercase-name"),
        pytest.param([*GET, (b"x-v", b"a\nb")], id="8.2.1-newline-in-value"),
        pytest.param([*GET, (b"connection", b"keep-alive")], id="8.2.2-connection"),
        pytest.param([*GET, (b"te", b"gzip")], id="8.2.2-te-not-trailers"),
        pytest.param([*GET, (b":unknown", b"x")], id="8.3-unknown-pseudo"),
        pytest.param([*GET, (b":status", b"200")], id="8.3-response-pseudo"),
        pytest.param([GET[0], (b"x-a", b"1"), *GET[1:]], id="8.3-pseudo-after-regular"),
        pytest.param([*GET, (b":path", b"/again")], id="8.3-repeated-pseudo"),
        pytest.param(GET[:3], id="8.3.1-no-path"),
        pytest.param([GET[0], *GET[2:]], id="8.3.1-no-scheme"),
        pytest.param(GET[1:], id="8.3.1-no-method"),
        pytest.param([*GET[:3], (b":path", b"")], id="8.3.1-empty-path"),
    ],
)
def test_8_malformed_request_is_a_stream_error(c: RawH2, fields: list) -> None:
    c.send(c.headers(1, fields))
    stream_error(c, 1, ErrorCodes.PROTOCOL_ERROR)


def test_8_1_content_length_differing_from_the_data(c: RawH2) -> None:
    c.send(c.headers(1, [*POST, (b"content-length", b"10")], end_stream=False),
           DataFrame(1, data=b"abc", flags=["END_STREAM"]))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR) or \
        (goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR)


def test_8_1_trailers_without_end_stream(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False), DataFrame(1, data=b"abc"),
           c.headers(1, [(b"x-trailer", b"1")], end_stream=False))
    reset = c.reset(1)
    goaway = c.goaway(1.0) if reset is None else None
    assert (reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR) or \
        (goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR)


@pytest.mark.parametrize("trailer", [(b":path", b"/x"), (b"X-Upper", b"1"), (b"connection", b"close"),
                                     (b"x-v", b"a\r\nb")])
def test_8_1_malformed_trailers(c: RawH2, trailer: tuple) -> None:
    c.send(c.headers(1, POST, end_stream=False), DataFrame(1, data=b"abc"),
           c.headers(1, [trailer], end_stream=True))
    stream_error(c, 1, ErrorCodes.PROTOCOL_ERROR)


def test_8_1_request_with_body_and_trailers_is_served(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False), DataFrame(1, data=b"abc"),
           c.headers(1, [(b"x-trailer", b"1")], end_stream=True))
    assert c.response(1) == (200, b"ok:abc")


def test_8_4_push_promise_from_a_client(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False))
    c.send(PushPromiseFrame(1, promised_stream_id=2, data=c.encoder.encode(GET), flags=["END_HEADERS"]))
    conn_error(c, ErrorCodes.PROTOCOL_ERROR)


def test_8_server_never_pushes_and_says_so(c: RawH2) -> None:
    settings = [f for f in c.frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags][0]
    assert settings.settings.get(SettingsFrame.ENABLE_PUSH, 0) == 0
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] >= 100
    c.send(c.headers(1))
    c.response(1)
    assert not any(isinstance(f, PushPromiseFrame) for f in c.frames)


# -- HPACK (RFC 7541, as RFC 9113 §4.3 requires) ----------------------------------------------


def test_hpack_table_size_update_over_the_setting(c: RawH2) -> None:
    # a dynamic table size update (001xxxxx) to 1 MiB, far above SETTINGS_HEADER_TABLE_SIZE
    update = b"\x3f\xe1\xff\x3f"
    c.send(HeadersFrame(1, data=update + c.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"]))
    conn_error(c, ErrorCodes.COMPRESSION_ERROR)


def test_hpack_index_beyond_the_table(c: RawH2) -> None:
    c.send(HeadersFrame(1, data=b"\xff\x7f", flags=["END_HEADERS", "END_STREAM"]))  # index 190
    conn_error(c, ErrorCodes.COMPRESSION_ERROR)


def test_5_4_1_goaway_names_the_last_stream_processed(c: RawH2) -> None:
    c.send(c.headers(1))
    assert c.response(1)[0] == 200
    c.send_raw(raw_frame(0x0, 0, 0, b"x"))  # a connection error
    goaway = c.goaway()
    assert goaway is not None and goaway.last_stream_id == 1


def test_priority_frames_are_accepted(c: RawH2) -> None:
    c.send(PriorityFrame(3, depends_on=0, stream_weight=10))
    still_serving(c)
