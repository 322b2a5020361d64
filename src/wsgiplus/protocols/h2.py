"""Sans-I/O HTTP/2 for a server (RFC 9113), on the ``h2`` library.

``H2Protocol`` takes the bytes a client sent and returns events
(``RequestReceived``, ``RequestData``, ``RequestEnded``, ``StreamReset``,
``ConnectionTerminated``); the server answers with ``send_headers`` /
``send_data`` / ``end_stream`` / ``reset_stream`` and takes the bytes to write
from ``data_to_send``. Nothing here touches a socket, a thread or a loop.

What this layer adds to ``h2``:

- **Request validation** as RFC 9113 §8 asks (pseudo-headers, lowercase
  names, field values, connection-specific fields, ``te``), answered with a
  *stream* error (RST_STREAM PROTOCOL_ERROR) so the other streams go on; a valid
  request becomes the same ``protocol.Request`` the HTTP/1.1 parser makes, so
  one environ builder serves both (``SERVER_PROTOCOL`` ``HTTP/2``).
- **Output flow control**: ``send_data`` buffers per stream; ``data_to_send``
  frames what the peer's stream *and* connection windows allow, round-robin
  over the streams, a bounded amount per call (so a connection whose
  transport is full stops pulling). ``writable(stream_id)`` is False above a
  per-stream high-water mark; ``pop_writable()`` names the streams that went
  back below the low-water mark: that is the per-stream backpressure.
- **Defences** (each counted on frame headers before ``h2`` sees the bytes):
  rapid reset (CVE-2023-44487: RST_STREAM and refused streams against a budget,
  then GOAWAY ENHANCE_YOUR_CALM; a stream reset in the same read as its request
  is never reported, so its app never runs; streams still being answered count
  against the concurrency limit even when the peer has reset them),
  CONTINUATION flood (the bytes of one header block are bounded), HPACK bomb
  (the decoded header list size is bounded while decoding), SETTINGS, PING,
  PRIORITY, unknown-frame, empty DATA and WINDOW_UPDATE floods (budgets), and
  a zero window that never opens (bounded buffers plus ``window_timeout``).
- **Timers** through an injectable clock: idle connection (GOAWAY), a liveness
  PING to a silent peer while streams are open, the zero-window timeout.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from .http11 import Request

__all__ = [
    "ConnectionTerminated",
    "valid_upgrade_settings",
    "ErrorCodes",
    "H2Limits",
    "H2Protocol",
    "PREFACE",
    "RequestData",
    "RequestEnded",
    "RequestReceived",
    "StreamReset",
    "validate_request",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6) and the flags the scanner reads
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = range(10)
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_REFUSALS = {413: b"request body too large\n", 408: b"request body not received in time\n"}
_MAX_CONTINUATIONS = 32  # CONTINUATION frames in one header block (h2 itself stops at 64)
_NOT_SETTINGS = "the client preface does not go on with SETTINGS"


@dataclass(frozen=True)
class H2Limits:
    """HTTP/2 limits; the ``Config`` fields ``h2_*`` set the first ones."""

    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS, and app streams per connection
    max_header_list_size: int = 65536  # SETTINGS_MAX_HEADER_LIST_SIZE, enforced while decoding
    header_table_size: int = 4096  # SETTINGS_HEADER_TABLE_SIZE (HPACK dynamic table)
    initial_window_size: int = 256 * 1024  # per stream, for request bodies
    connection_window_size: int = 1024 * 1024  # the connection's receive window
    max_frame_size: int = 16384  # SETTINGS_MAX_FRAME_SIZE
    max_body_size: int = 1024 * 1024 * 1024  # request body; 413 beyond
    idle_timeout: float | None = 60.0  # no stream open this long: GOAWAY and close
    ping_timeout: float | None = 20.0  # silent peer with streams open: PING; no answer: close
    window_timeout: float | None = 30.0  # output waiting on a zero window this long: stream reset
    body_timeout: float | None = 30.0  # between two pieces of a request body: 408 and the stream ends
    body_min_rate: float | None = None  # and in total body_timeout + bytes / this (a trickle is cut)
    stream_buffer_high: int = 64 * 1024  # buffered output per stream above which it is not writable
    stream_buffer_low: int = 16 * 1024  # ... and below which it is writable again
    # budgets: at most `burst` of a kind at once, refilled at `burst / budget_window` per second
    reset_burst: int = 200  # RST_STREAM from the peer + streams refused (rapid reset)
    flood_burst: int = 1000  # each of: SETTINGS, PING, PRIORITY, unknown, empty frames, WINDOW_UPDATE
    budget_window: float = 10.0
    send_chunk: int = 256 * 1024  # bytes framed per data_to_send() call


# -- events -------------------------------------------------------------------


class RequestReceived:
    """A valid request head on a new stream. ``ended``: it has no body, and no
    ``RequestEnded`` follows."""

    __slots__ = ("stream_id", "request", "ended")

    def __init__(self, stream_id: int, request: Request, ended: bool) -> None:
        self.stream_id = stream_id
        self.request = request
        self.ended = ended

    def __repr__(self) -> str:
        return f"<RequestReceived {self.stream_id} {self.request!r}{' ended' if self.ended else ''}>"


class RequestData:
    """A piece of a request body (already acknowledged to the peer's flow control)."""

    __slots__ = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data

    def __repr__(self) -> str:
        return f"<RequestData {self.stream_id} {len(self.data)} bytes>"


class RequestEnded:
    """The request body is complete; ``trailers``: its checked trailer fields, if any."""

    __slots__ = ("stream_id", "trailers")

    def __init__(self, stream_id: int, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.stream_id = stream_id
        self.trailers = trailers

    def __repr__(self) -> str:
        return f"<RequestEnded {self.stream_id}>"


class StreamReset:
    """A reported stream is gone: reset by the peer (``remote``) or by us (a limit,
    a timeout). Its response can no longer be sent: treat it as a disconnect."""

    __slots__ = ("stream_id", "error_code", "remote")

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote

    def __repr__(self) -> str:
        who = "peer" if self.remote else "server"
        return f"<StreamReset {self.stream_id} {ErrorCodes(self.error_code).name if self.error_code in ErrorCodes._value2member_map_ else self.error_code} by {who}>"


class ConnectionTerminated:
    """The connection is over: a GOAWAY was sent (protocol error, flood, timeout)
    or received (``remote``). Write ``data_to_send()`` and close when ``closed``."""

    __slots__ = ("error_code", "reason", "remote")

    def __init__(self, error_code: int, reason: str, remote: bool) -> None:
        self.error_code = error_code
        self.reason = reason
        self.remote = remote

    def __repr__(self) -> str:
        return f"<ConnectionTerminated {self.error_code} {self.reason!r}{' by peer' if self.remote else ''}>"


Event = RequestReceived | RequestData | RequestEnded | StreamReset | ConnectionTerminated


# -- request validation ---------------------------------------------------------

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")  # a token, lowercase (RFC 9113 §8.2)
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")  # RFC 9113 §8.2.1
_BAD_PATH = re.compile(rb"[\x00-\x20\x7f]")
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9113 §8.2.2: these make a request malformed
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)


class _Malformed(Exception):
    pass


def validate_request(headers: list[tuple[bytes, bytes]], ended: bool) -> Request:
    """A request head as ``protocol.Request`` (``http_version`` ``"2"``), or ``_Malformed``.

    ``:authority`` (else ``host``) becomes the ``host`` field; cookies stay
    separate fields (the environ builder joins them with ``"; "``).
    """
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    host: bytes | None = None
    content_length: int | None = None
    for name, value in headers:
        if name[:1] == b":":
            if fields:
                raise _Malformed("pseudo-header field after a regular field")
            if name not in _PSEUDO:
                raise _Malformed(f"pseudo-header field {name!r} is not a request one")
            if name in pseudo:
                raise _Malformed(f"repeated pseudo-header field {name!r}")
            pseudo[name] = value
            continue
        if not _NAME.match(name):
            raise _Malformed(f"invalid field name {name!r}")
        if _BAD_VALUE.search(value) or value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
            raise _Malformed(f"invalid value of field {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise _Malformed(f"connection-specific field {name!r}")
        if name == b"te" and value.lower() != b"trailers":
            raise _Malformed("te other than trailers")
        if name == b"host":
            if host is not None:
                raise _Malformed("repeated host")
            host = value
            continue
        if name == b"content-length":
            if not value.isdigit():
                raise _Malformed("invalid content-length")
            length = int(value)
            if content_length is not None and length != content_length:
                raise _Malformed("differing content-length")
            content_length = length
        fields.append((name, value))
    for value in pseudo.values():
        if _BAD_VALUE.search(value):
            raise _Malformed("invalid pseudo-header value")
    method = pseudo.get(b":method")
    if method is None or not _METHOD.match(method):
        raise _Malformed("missing or invalid :method")
    authority = pseudo.get(b":authority")
    if method == b"CONNECT":
        if b":scheme" in pseudo or b":path" in pseudo or not authority:
            raise _Malformed("CONNECT takes :authority only")
        target = b""
    else:
        target = pseudo.get(b":path", b"")
        if b":scheme" not in pseudo or not target:
            raise _Malformed("missing :scheme or :path")
        if _BAD_PATH.search(target):
            raise _Malformed("invalid :path")
        if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
            raise _Malformed(":path is not origin-form")
    if authority is not None:
        if _BAD_PATH.search(authority):
            raise _Malformed("invalid :authority")
        if host is not None and host != authority:
            raise _Malformed("host differs from :authority")
        host = authority
    if host is not None:
        fields.insert(0, (b"host", host))
    if ended and content_length:
        raise _Malformed("content-length without a body")
    path, _, query = target.partition(b"?")
    return Request(
        method.decode("ascii"),
        target,
        path,
        query,
        "2",
        fields,
        True,
        False,
        content_length,
        content_length is None and not ended,  # length known only at the end, as chunked
        None,
    )


def valid_upgrade_settings(value: bytes) -> bool:
    """An ``HTTP2-Settings`` value h2 can take: base64url of whole 6-byte settings."""
    value = value.strip()
    try:
        raw = base64.b64decode(value + b"=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        return False
    return len(raw) % 6 == 0


def _checked_trailers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
    """A trailer section's fields, or None if it is malformed (pseudo-headers, bad names or
    values, connection-specific fields)."""
    for name, value in headers:
        if not _NAME.match(name) or name in _CONNECTION_SPECIFIC or _BAD_VALUE.search(value):
            return None
    return list(headers)


# -- budgets and per-stream state ---------------------------------------------


class _Budget:
    """A leaky bucket: ``spend`` is True when more than ``burst`` arrived faster
    than ``burst / window`` per second drains."""

    __slots__ = ("burst", "rate", "level", "stamp")

    def __init__(self, burst: int, window: float) -> None:
        self.burst = burst
        self.rate = burst / window if window > 0 else float("inf")
        self.level = 0.0
        self.stamp = 0.0

    def spend(self, now: float, n: float = 1.0) -> bool:
        level = self.level - (now - self.stamp) * self.rate
        self.stamp = now
        self.level = level = (level if level > 0.0 else 0.0) + n
        return level > self.burst

    def refund(self, n: float) -> None:
        level = self.level - n
        self.level = level if level > 0.0 else 0.0


class _Stream:
    """One stream the server reported to its user, until the user releases it."""

    __slots__ = (
        "stream_id",
        "out",
        "out_size",
        "end",
        "ended",
        "reset",
        "remote_ended",
        "released",
        "body_size",
        "head_sent",
        "blocked_since",
        "want_writable",
        "reported",
        "last_input",
        "started",
        "trailers",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.out: deque[bytes] = deque()
        self.out_size = 0
        self.end = False  # the user ended the response: END_STREAM after the buffered data
        self.ended = False  # END_STREAM sent
        self.reset = False  # RST_STREAM sent or received
        self.remote_ended = False
        self.released = False
        self.body_size = 0
        self.head_sent = False
        self.blocked_since = 0.0  # clock() when output started waiting on a zero window
        self.want_writable = False
        self.reported = False  # the user got its RequestReceived
        self.last_input = 0.0  # clock() of the last piece of the request
        self.started = 0.0  # clock() when its head arrived
        self.trailers: list[tuple[bytes, bytes]] | None = None  # until RequestEnded takes them


def _settings_codes() -> Any:
    return h2.settings.SettingCodes


class H2Protocol:
    """One server-side HTTP/2 connection, sans-I/O. Not thread-safe: one owner.

    Call ``initiate()`` (or ``initiate_upgrade()`` after an ``Upgrade: h2c``),
    then ``receive_data()`` with every read, ``tick()`` now and then (about once
    a second), and write ``data_to_send()`` while the transport takes it.
    Every ``RequestReceived`` must be ``release()``-d once the exchange is over.
    """

    def __init__(self, limits: H2Limits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits = limits or H2Limits()
        self.clock = clock
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,  # done here, as stream errors (h2 makes them connection errors)
            normalize_inbound_headers=False,
            # response heads are checked once per distinct head (runner.app_head: token names,
            # no CR/LF/controls, no hop-by-hop fields) and lower-cased by the caller; h2's
            # own pass over every field of every response cost ~40 % of send_headers
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = self.conn = h2.connection.H2Connection(config)
        codes = _settings_codes()
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                codes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
                codes.HEADER_TABLE_SIZE: limits.header_table_size,
                codes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
                codes.MAX_FRAME_SIZE: limits.max_frame_size,
                codes.ENABLE_PUSH: 0,
            },
        )
        # enforced from the first frame, not only once the peer ACKs our SETTINGS
        conn.decoder.max_header_list_size = limits.max_header_list_size
        conn.decoder.max_allowed_table_size = limits.header_table_size
        self.streams: dict[int, _Stream] = {}
        self._ready: dict[int, None] = {}  # streams with output to frame, in order
        self._writable: list[int] = []
        self._new: dict[int, RequestReceived] = {}
        self._withdrawn: set[int] = set()
        self._out = bytearray()  # bytes taken from h2, in order, plus our own GOAWAY
        self.closed = False  # the connection is over: write what is left and close
        self.going_away: int | None = None  # last stream id of a graceful GOAWAY
        self.requests = 0  # streams reported to the user
        self.highest_stream = 0
        window = limits.budget_window
        self._resets = _Budget(limits.reset_burst, window)
        self._floods = {
            kind: _Budget(limits.flood_burst, window)
            for kind in ("settings", "ping", "priority", "unknown", "empty", "window_update")
        }
        # frame scanner state (frame headers are read before h2 parses them)
        self._scan_preface = len(PREFACE)
        self._scan_head = bytearray()
        self._scan_skip = 0
        self._block_bytes = -1  # bytes of the header block being received; -1: none open
        self._scan_first = True  # the client's first frame must be SETTINGS
        self._block_frames = 0
        now = clock()
        self._last_received = now
        self._idle_since: float | None = now
        self._ping_sent: float | None = None

    # -- setup ------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the server's connection preface (SETTINGS) and open the connection window."""
        self.conn.initiate_connection()
        self._open_connection_window()

    def initiate_upgrade(self, settings_header: bytes, request: Request) -> None:
        """After answering ``Upgrade: h2c`` with 101: the upgrading request is stream 1,
        already complete (its body came over HTTP/1.1); the caller answers it."""
        settings_header = settings_header.strip()
        settings_header += b"=" * (-len(settings_header) % 4)  # token68 comes unpadded; h2 wants padding
        self.conn.initiate_upgrade_connection(settings_header)
        self._open_connection_window()
        stream = self.streams[1] = _Stream(1)
        stream.remote_ended = True
        stream.reported = True  # the caller has the request already
        self.requests += 1
        self.highest_stream = 1
        self._idle_since = None

    def _open_connection_window(self) -> None:
        extra = self.limits.connection_window_size - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)

    # -- input ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer; returns what they mean, in order."""
        if self.closed or not data:
            return []
        now = self.clock()
        self._last_received = now
        self._ping_sent = None
        usable, violation, code = self._scan(data, now)
        events: list[Event] = []
        if usable:
            try:
                h2_events = self.conn.receive_data(data if usable == len(data) else data[:usable])
            except h2.exceptions.ProtocolError as exc:
                # h2 has queued its GOAWAY
                code = int(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR))
                if isinstance(exc.__cause__, hpack.HPACKError) and not isinstance(exc, h2.exceptions.DenialOfServiceError):
                    code = ErrorCodes.COMPRESSION_ERROR  # RFC 9113 §4.3; h2 says PROTOCOL_ERROR
                    self._replace_goaway(code)
                self._terminated(events, code, str(exc))
                return events
            self._handle(h2_events, events, now)
        if violation and not self.closed:
            self.terminate(code, violation)
            events.append(ConnectionTerminated(code, violation, False))
        if self.closed and events:
            # the connection is over: a request reported in this same read never runs
            fresh = {e.stream_id for e in events if type(e) is RequestReceived}
            if fresh:
                events = [e for e in events if getattr(e, "stream_id", None) not in fresh]
                for sid in fresh:
                    self.streams[sid].reported = False
                    self.release(sid)
        return events

    def _replace_goaway(self, code: int) -> None:
        """Swap the error code of the GOAWAY h2 has just queued (the last frame it queued)."""
        out = self.conn.data_to_send()
        if len(out) >= 17 and out[-14] == _GOAWAY and out[-17:-14] == b"\x00\x00\x08":
            out = out[:-4] + code.to_bytes(4, "big")
        self._out += out

    def _scan(self, data: bytes, now: float) -> tuple[int, str | None, int]:
        """Read frame headers ahead of h2: floods and header-block sizes.

        Returns how many bytes may be given to h2 (all, or up to the frame that
        broke a limit), what was broken and the GOAWAY error code for it.
        """
        pos = 0
        end = len(data)
        limits = self.limits
        if self._scan_preface:
            take = min(self._scan_preface, end)
            self._scan_preface -= take
            pos = take  # h2 checks the preface itself
        while pos < end:
            if self._scan_skip:
                take = min(self._scan_skip, end - pos)
                self._scan_skip -= take
                pos += take
                continue
            head = self._scan_head
            frame_start = pos - len(head)
            need = 9 - len(head)
            head += data[pos : pos + need]
            pos += min(need, end - pos)
            if len(head) < 9:
                break
            length = (head[0] << 16) | (head[1] << 8) | head[2]
            kind = head[3]
            flags = head[4]
            del head[:]
            self._scan_skip = length
            problem = None
            if self._scan_first:
                self._scan_first = False
                if kind != _SETTINGS or flags & _ACK:
                    return max(frame_start, 0), _NOT_SETTINGS, ErrorCodes.PROTOCOL_ERROR  # RFC 9113 §3.4
            if kind == _DATA:
                if length == 0 and not flags & _END_STREAM and self._floods["empty"].spend(now):
                    problem = "empty DATA flood"
            elif kind == _HEADERS:
                if not flags & _END_HEADERS:
                    self._block_bytes = length
                    self._block_frames = 0
                if length == 0 and self._floods["empty"].spend(now):
                    problem = "empty HEADERS flood"
            elif kind == _CONTINUATION:
                if self._block_bytes >= 0:
                    self._block_bytes += length
                    self._block_frames += 1
                    if self._block_bytes > limits.max_header_list_size or self._block_frames > _MAX_CONTINUATIONS:
                        problem = "header block too large (CONTINUATION flood)"
                    elif flags & _END_HEADERS:
                        self._block_bytes = -1
                if length == 0 and not problem and self._floods["empty"].spend(now):
                    problem = "empty CONTINUATION flood"
            elif kind == _RST_STREAM:
                if self._resets.spend(now):
                    problem = "too many stream resets (rapid reset)"
            elif kind == _SETTINGS:
                if flags & _ACK and length:
                    return max(frame_start, 0), "SETTINGS ACK with a payload", ErrorCodes.FRAME_SIZE_ERROR  # §6.5
                if not flags & _ACK and self._floods["settings"].spend(now):
                    problem = "SETTINGS flood"
            elif kind == _PING:
                if not flags & _ACK and self._floods["ping"].spend(now):
                    problem = "PING flood"
            elif kind == _WINDOW_UPDATE:
                if self._floods["window_update"].spend(now):
                    problem = "WINDOW_UPDATE flood"
            elif kind == _PRIORITY:
                if self._floods["priority"].spend(now):
                    problem = "PRIORITY flood"
            elif kind > _CONTINUATION:
                if self._floods["unknown"].spend(now):
                    problem = "unknown frame flood"
            if kind != _CONTINUATION and kind != _HEADERS and self._block_bytes >= 0:
                self._block_bytes = -1  # h2 refuses the interleaved frame itself
            if problem:
                return max(frame_start, 0), problem, ErrorCodes.ENHANCE_YOUR_CALM
        return end, None, 0

    def _handle(self, h2_events: list[Any], events: list[Event], now: float) -> None:
        conn = self.conn
        streams = self.streams
        self._new = {}  # reported in this read: taken back if reset in it too
        self._withdrawn = set()
        for ev in h2_events:
            kind = type(ev)
            if kind is h2.events.RequestReceived:
                self._on_request(ev, events)
            elif kind is h2.events.DataReceived:
                sid = ev.stream_id
                if ev.flow_controlled_length:
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                stream = streams.get(sid)
                if stream is None or stream.reset or not ev.data:
                    continue
                stream.last_input = now
                stream.body_size += len(ev.data)
                if stream.body_size > self.limits.max_body_size:
                    self._refuse(stream, 413, events)
                else:
                    events.append(RequestData(sid, ev.data))
            elif kind is h2.events.StreamEnded:
                stream = streams.get(ev.stream_id)
                if stream is not None and not stream.reset:
                    stream.remote_ended = True
                    report = self._new.get(ev.stream_id)
                    if (report is not None and report.request.content_length is None and not stream.body_size
                            and stream.trailers is None):
                        report.ended = True
                        report.request.chunked = False
                    else:
                        events.append(RequestEnded(ev.stream_id, stream.trailers))
                        stream.trailers = None
            elif kind is h2.events.TrailersReceived:
                stream = streams.get(ev.stream_id)
                if stream is not None and not stream.reset:
                    trailers = _checked_trailers(ev.headers)
                    if trailers is None:  # RFC 9113 §8.1: malformed
                        self._reset(stream, ErrorCodes.PROTOCOL_ERROR, events)
                    else:
                        stream.trailers = trailers  # with RequestEnded; never merged into the head
            elif kind is h2.events.StreamReset:
                stream = streams.get(ev.stream_id)
                if stream is not None and not stream.reset:
                    stream.reset = True
                    self._drop_output(stream)
                    self._withdraw(stream, ev.error_code, True, events)
            elif kind is h2.events.ConnectionTerminated:
                self._terminated(events, ev.error_code, "GOAWAY from the peer", remote=True)
            elif kind is h2.events.PingAckReceived:
                self._ping_sent = None
            # WindowUpdated, RemoteSettingsChanged: data_to_send() looks at the windows
            # again; SettingsAcknowledged, PriorityUpdated, UnknownFrameReceived: nothing to do
        if self._withdrawn:
            gone = self._withdrawn
            events[:] = [e for e in events if type(e) is StreamReset or getattr(e, "stream_id", None) not in gone]
        self._new = {}

    def _withdraw(self, stream: _Stream, error_code: int, remote: bool, events: list[Event]) -> None:
        """The stream is gone: tell the user, or, if the user never heard of it, forget it."""
        sid = stream.stream_id
        if stream.released:  # the user is done with it already: nothing to tell
            self._maybe_forget(stream)
            return
        if sid in self._new:
            # opened and reset in one read: never reported, so its app never runs
            del self._new[sid]
            self._withdrawn.add(sid)
            stream.reported = False
        if stream.reported:
            events.append(StreamReset(sid, error_code, remote))
        else:
            self.release(sid)

    def _on_request(self, ev: Any, events: list[Event]) -> None:
        sid = ev.stream_id
        conn = self.conn
        self.highest_stream = max(self.highest_stream, sid)
        if self.going_away is not None and sid > self.going_away:
            conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)  # after our GOAWAY: not processed
            return
        ended = ev.stream_ended is not None
        try:
            request = validate_request(ev.headers, ended)
        except _Malformed:
            conn.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.1.1: a stream error
            self._count_refusal()
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:
            # h2 counts open streams; this counts streams still being answered,
            # including those the peer has reset (rapid reset)
            conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self._count_refusal()
            return
        stream = self.streams[sid] = _Stream(sid)
        stream.remote_ended = ended
        stream.last_input = stream.started = self.clock()
        self.requests += 1
        self._idle_since = None
        if request.content_length is not None and request.content_length > self.limits.max_body_size:
            self._refuse(stream, 413, events)
            return
        if not ended:
            for name, value in request.headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    conn.send_headers(sid, [(b":status", b"100")])  # the body is read at once
        report = RequestReceived(sid, request, ended)
        stream.reported = True
        self._new[sid] = report
        events.append(report)

    def _count_refusal(self) -> None:
        if not self.closed and self._resets.spend(self.clock()):
            self.terminate(ErrorCodes.ENHANCE_YOUR_CALM, "too many refused streams")

    def _refuse(self, stream: _Stream, status: int, events: list[Event]) -> None:
        """Answer ``status`` to a request whose app must not run, and end the stream."""
        sid = stream.stream_id
        body = _REFUSALS.get(status, b"")
        self.send_headers(sid, status, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))])
        self.send_data(sid, body, end_stream=True)
        self._pump_stream(stream, self.limits.send_chunk)  # small: fits any window
        if not stream.remote_ended:
            try:
                self.conn.reset_stream(sid, ErrorCodes.NO_ERROR)  # RFC 9113 §8.1: the rest is not wanted
            except h2.exceptions.StreamClosedError:
                pass
        stream.reset = True
        self._drop_output(stream)
        self._withdraw(stream, ErrorCodes.NO_ERROR, False, events)

    # -- output -----------------------------------------------------------------

    def send_headers(self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> bool:
        """Send the response head; False if the stream is gone (reset). ``headers`` are
        lower-case names and checked values (h2's own checks are off: see ``__init__``)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset or self.conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
            return False
        try:
            self.conn.send_headers(stream_id, [(b":status", b"%d" % status), *headers], end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            return False
        except h2.exceptions.ProtocolError as exc:  # a header h2 refuses to send
            raise ValueError(str(exc)) from None
        stream.head_sent = True
        if end_stream:
            stream.end = stream.ended = True
            self._maybe_forget(stream)
        return True

    def send_informational(self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        """A 1xx (``103 Early Hints``) before the response head; False if it cannot go."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset or stream.head_sent or self.closed:
            return False
        try:
            self.conn.send_headers(stream_id, [(b":status", b"%d" % status), *headers])
        except h2.exceptions.ProtocolError:
            return False
        return True

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        """Buffer response body bytes for the stream; framed by ``data_to_send()`` as the
        windows allow. False if the stream is gone. Check ``writable()`` after it."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset or stream.end:
            return False
        if data:
            stream.out.append(data)
            stream.out_size += len(data)
        if end_stream:
            stream.end = True
        self._ready[stream_id] = None
        return True

    def end_stream(self, stream_id: int) -> bool:
        return self.send_data(stream_id, b"", end_stream=True)

    def writable(self, stream_id: int) -> bool:
        """False while the stream's buffered output is above its high-water mark (then
        ``pop_writable()`` names it once it has drained below the low-water mark)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return True
        if stream.out_size > self.limits.stream_buffer_high:
            stream.want_writable = True
            return False
        return True

    def buffered(self, stream_id: int) -> int:
        stream = self.streams.get(stream_id)
        return stream.out_size if stream is not None else 0

    def pop_writable(self) -> list[int]:
        """Streams that became writable again since the last call."""
        ready = self._writable
        self._writable = []
        return ready

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """Abort a stream (a broken response): RST_STREAM, buffered output dropped."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset:
            return
        self._reset(stream, error_code, None)

    def _reset(self, stream: _Stream, error_code: int, events: list[Event] | None) -> None:
        stream.reset = True
        self._drop_output(stream)
        if not self.closed:
            try:
                self.conn.reset_stream(stream.stream_id, error_code)
            except h2.exceptions.StreamClosedError:
                pass
        if events is not None:
            self._withdraw(stream, error_code, False, events)
        else:
            self._maybe_forget(stream)

    def _drop_output(self, stream: _Stream) -> None:
        stream.out.clear()
        stream.out_size = 0
        self._ready.pop(stream.stream_id, None)

    def release(self, stream_id: int) -> None:
        """The user is done with the stream (answered, or dropped after a reset)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.released = True
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: _Stream) -> None:
        if stream.released and (stream.reset or stream.ended):
            self.streams.pop(stream.stream_id, None)
            self._ready.pop(stream.stream_id, None)
            if not self.streams:
                self._idle_since = self.clock()

    def goaway(self, error_code: int = ErrorCodes.NO_ERROR) -> None:
        """Graceful stop: GOAWAY with the last stream id; streams up to it are finished,
        later ones refused. ``finished`` turns True when the last one is done."""
        if self.closed or self.going_away is not None:
            return
        self.going_away = last = self.conn.highest_inbound_stream_id
        self._out += self.conn.data_to_send()
        frame = GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = error_code
        self._out += frame.serialize()

    def terminate(self, error_code: int, reason: str = "") -> None:
        """Connection error: GOAWAY with ``error_code`` and the last stream id; nothing more is read."""
        if self.closed:
            return
        self.closed = True
        try:
            self.conn.close_connection(
                error_code, additional_data=reason.encode()[:256] or None,
                last_stream_id=self.conn.highest_inbound_stream_id,
            )
        except h2.exceptions.ProtocolError:
            pass
        for stream in self.streams.values():
            stream.reset = True
            self._drop_output(stream)

    def _terminated(self, events: list[Event], error_code: int, reason: str, remote: bool = False) -> None:
        self.closed = True
        for stream in self.streams.values():
            stream.reset = True
            self._drop_output(stream)
        events.append(ConnectionTerminated(error_code, reason, remote))

    @property
    def finished(self) -> bool:
        """True when the connection should be closed once ``data_to_send()`` is written."""
        return self.closed or (self.going_away is not None and not self.streams)

    def data_to_send(self, limit: int | None = None) -> bytes:
        """Frame buffered output as the windows allow (at most ``limit`` body bytes,
        default ``send_chunk``) and return every byte to write, in order."""
        if self._ready and not self.closed:
            budget = self.limits.send_chunk if limit is None else limit
            self._pump(budget)
        out = self._out
        if out:
            out += self.conn.data_to_send()
            self._out = bytearray()
            return bytes(out)
        return self.conn.data_to_send()

    def _pump(self, budget: int) -> None:
        streams = self.streams
        while self._ready and budget > 0:
            progressed = False
            for sid in list(self._ready):
                stream = streams.get(sid)
                if stream is None or stream.reset:
                    self._ready.pop(sid, None)
                    continue
                sent = self._pump_stream(stream, min(budget, self.conn.max_outbound_frame_size))
                if sent > 0:
                    budget -= sent
                    progressed = True
                if budget <= 0:
                    break
            if not progressed:
                break

    def _pump_stream(self, stream: _Stream, budget: int) -> int:
        """Frame up to ``budget`` bytes of one stream; returns the bytes framed (-1: only END_STREAM)."""
        conn = self.conn
        sid = stream.stream_id
        sent = 0
        if stream.out_size:
            try:
                window = conn.local_flow_control_window(sid)
            except h2.exceptions.StreamClosedError:
                self._drop_output(stream)
                return 0
            n = min(window, budget, stream.out_size, conn.max_outbound_frame_size)
            if n <= 0:
                if not stream.blocked_since:
                    stream.blocked_since = self.clock()
                return 0
            stream.blocked_since = 0.0
            out = stream.out
            parts = []
            left = n
            while left:
                chunk = out[0]
                if len(chunk) <= left:
                    parts.append(out.popleft())
                    left -= len(chunk)
                else:
                    parts.append(chunk[:left])
                    out[0] = chunk[left:]
                    left = 0
            stream.out_size -= n
            last = stream.end and not stream.out_size
            conn.send_data(sid, parts[0] if len(parts) == 1 else b"".join(parts), end_stream=last)
            sent = n
            # the peer's WINDOW_UPDATEs answer our DATA: refund their budget
            self._floods["window_update"].refund(2)
            if last:
                stream.ended = True
        elif stream.end and not stream.ended:
            try:
                conn.end_stream(sid)
            except h2.exceptions.StreamClosedError:
                pass
            stream.ended = True
            sent = -1
        if stream.want_writable and stream.out_size <= self.limits.stream_buffer_low:
            stream.want_writable = False
            self._writable.append(sid)
        if not stream.out_size and (stream.ended or not stream.end):
            self._ready.pop(sid, None)
            self._maybe_forget(stream)
        return sent

    # -- timers -----------------------------------------------------------------

    def tick(self) -> list[Event]:
        """Fire due timers: request body timeout (408), zero-window timeout (stream reset),
        liveness PING, idle GOAWAY."""
        if self.closed:
            return []
        now = self.clock()
        limits = self.limits
        events: list[Event] = []
        timeout = limits.body_timeout
        if timeout:
            rate = limits.body_min_rate
            for stream in list(self.streams.values()):
                if stream.remote_ended or stream.reset:
                    continue
                late = now - stream.last_input >= timeout  # stopped arriving
                if rate and not late:  # or arriving slower than body_min_rate on average
                    late = now >= stream.started + timeout + stream.body_size / rate
                if late:
                    self._refuse(stream, 408, events)
        if limits.window_timeout:
            for stream in list(self.streams.values()):
                if stream.blocked_since and now - stream.blocked_since >= limits.window_timeout and not stream.reset:
                    self._reset(stream, ErrorCodes.CANCEL, events)
        if self.streams:
            if limits.ping_timeout:
                if self._ping_sent is not None:
                    if now - self._ping_sent >= limits.ping_timeout:
                        self.terminate(ErrorCodes.NO_ERROR, "ping timeout")
                        events.append(ConnectionTerminated(ErrorCodes.NO_ERROR, "ping timeout", False))
                elif now - self._last_received >= limits.ping_timeout:
                    self._ping_sent = now
                    self.conn.ping(b"wsgiplus")
        elif limits.idle_timeout and self._idle_since is not None and now - self._idle_since >= limits.idle_timeout:
            self.terminate(ErrorCodes.NO_ERROR, "idle")
            events.append(ConnectionTerminated(ErrorCodes.NO_ERROR, "idle", False))
        return events
