"""Sans-I/O HTTP/1.1 for a server: bytes in, events out, and response framing.

Nothing here touches a socket, a thread or an event loop, so every rule about
what a server must accept, reject and send can be tested with plain bytes.
Parsing is done by ``httptools`` (llhttp, the parser of Node.js), which already
refuses most request-smuggling shapes (CL+TE, duplicate Content-Length, bad
chunk sizes, bare LF, obs-fold, invalid tokens); this module adds the rules
llhttp leaves to the server (Host, HTTP/1.0 + Transfer-Encoding, limits).

The parser also frames every message itself and hands llhttp exactly one
head, one Content-Length body or one chunked body at a time: a chunked body is
decoded here (RFC 9112 7.1: size line and chunk extensions validated, then
dropped: a size line with extensions reaches llhttp as ``HEX CRLF``, the rest
as it is), so llhttp and WSGI+ cannot disagree on where a message ends (both
views are compared after each piece).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

from ..server.streams import ResponseHead

__all__ = [
    "Data",
    "EndOfMessage",
    "Limits",
    "MemoryBudget",
    "ProtocolError",
    "Request",
    "RequestParser",
    "AppHead",
    "ResponseFramer",
    "build_response",
    "encode_head",
    "error_page",
    "error_response",
    "http_date",
]


class ProtocolError(Exception):
    """The peer broke HTTP: answer ``status`` and close the connection.

    ``events`` holds what the same ``feed()`` completed before the error (a
    valid pipelined request ahead of the bad bytes is still answered).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.events: list = []


@dataclass(frozen=True)
class Limits:
    """Request size limits (gunicorn's names in brackets)."""

    max_request_line: int = 8190  # [limit_request_line] -> 414
    max_header_count: int = 100  # [limit_request_fields] -> 431
    max_header_size: int = 8190  # [limit_request_field_size] one field -> 431
    max_body_size: int = 1024 * 1024 * 1024  # -> 413

    @property
    def max_head_bytes(self) -> int:
        """Hard bound on a head still incomplete, so a never-ending field cannot eat memory."""
        return self.max_request_line + self.max_header_count * (self.max_header_size + 4) + 4


log = logging.getLogger("wsgiplus.error")


class MemoryBudget:
    """Bytes held in memory by buffered request heads and bodies, server-wide.

    ``take(n)`` charges n bytes if that stays within ``limit`` (None: no limit)
    and says whether it did; ``give(n)`` returns them. Bodies are charged on
    the loop thread and may be returned from a pool thread (when the last
    reference to a finished body goes), hence the lock. ``refuse(what)`` logs
    one line at most every 10 s per kind.
    """

    __slots__ = ("limit", "used", "_lock", "_logged")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or None
        self.used = 0
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}

    def take(self, n: int) -> bool:
        with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        if n:
            with self._lock:
                self.used -= n

    def refuse(self, what: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -1e9) >= 10.0:
            self._logged[what] = now
            log.warning("buffered request memory at its budget (max_buffered_size %d bytes, %d held): %s",
                        self.limit or 0, self.used, what)


class Request:
    """A request head: everything before the body."""

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "http_version",
        "headers",
        "keep_alive",
        "expect_continue",
        "content_length",
        "chunked",
        "upgrade",
        "trailers",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: bytes,
        query: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        expect_continue: bool,
        content_length: int | None,
        chunked: bool,
        upgrade: bytes | None,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade
        self.trailers: list[tuple[bytes, bytes]] | None = None  # chunked trailer section, if any

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target!r} HTTP/{self.http_version}>"


class Data:
    """A piece of request body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)} bytes>"


class EndOfMessage:
    """The request body is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<EndOfMessage>"


END_OF_MESSAGE = EndOfMessage()

Event = Request | Data | EndOfMessage


# chunk-size [ chunk-ext ] CRLF, with
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  (RFC 9112 7.1.1)
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x20-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*\r\n"
)
_HEXDIGITS = b"0123456789abcdefABCDEF"
_MAX_CHUNK_LINE = 4096  # a size line with its extensions, CRLF included
# a run of OWS holding an HTAB just before a CR: trailing OWS, made SP for llhttp
# (which refuses "Transfer-Encoding: chunked<HTAB>"); same length, so no offset moves
_TRAILING_TAB = re.compile(rb"[ \t]*\t[ \t]*(?=\r)")

# how the parser frames what it feeds llhttp
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS = range(6)


def _spaces(match: re.Match) -> bytes:
    return b" " * (match.end() - match.start())


# lengths of the field names the parser itself must look at:
# host, expect, upgrade, content-length, transfer-encoding
_SPECIAL_LENGTHS = frozenset({4, 6, 7, 14, 17})


class RequestParser:
    """Turns received bytes into ``Request``, ``Data`` and ``EndOfMessage`` events.

    ``feed()`` returns the events the bytes completed and raises ``ProtocolError``
    for anything a server must refuse; after an error or an upgrade the parser
    takes no more bytes (``upgraded_data`` holds what followed the upgrade).
    """

    def __init__(self, limits: Limits | None = None, budget: MemoryBudget | None = None) -> None:
        self.limits = limits or Limits()
        self.budget = budget
        self._charged = 0  # head bytes charged to the budget
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False
        self._in_message = False
        self._request: Request | None = None  # whose trailer fields may still come
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._data = b""  # the bytes being fed, and before them those of an unfinished head:
        self._window: bytearray | None = None  # where the request line's protocol name is checked
        self._search_from = 0  # in the window: past the request lines already checked
        self._keep_alive = True
        self._head_bytes = 0
        self._body_bytes = 0
        self.finished = False  # error or upgrade: no more HTTP on this connection
        self.upgraded_data: bytes | None = None
        # framing (see _route)
        self._mode = _HEAD
        self._tail = b""  # the last bytes (up to 3) of the head or trailer section fed
        self._held = b""  # trailing OWS with an HTAB at the end of a feed, in a head
        self._headers_done = False
        self._head_request: Request | None = None
        self._remaining = 0  # of the Content-Length body, or of the chunk
        self._expected = 0  # chunked: data bytes of this message fed to llhttp
        self._line = b""  # chunked: a partial size line
        self._crlf = 0  # chunked: bytes of the CRLF after the data seen
        self._trailer_bytes = 0

    @property
    def reusable(self) -> bool:
        """Idle after a keep-alive message: llhttp refuses data after a close."""
        return self.idle and not self.finished and self._keep_alive

    @property
    def idle(self) -> bool:
        """Between messages: no partial head or body is held."""
        return not self._in_head and not self._in_message

    def feed(self, data: bytes) -> list[Event]:
        if self.finished:
            raise ProtocolError(400, "data after the end of HTTP on this connection")
        events: list[Event] = []
        self._events = events
        self._data = data
        if self._window is None:
            self._search_from = 0
        held = self._held
        if held:
            self._held = b""
        try:
            self._route(held + data if held else data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, ProtocolError):
                raise  # a bug of ours, not the peer's
            error = cause
        except ProtocolError as exc:
            error = exc
        except httptools.HttpParserInvalidMethodError as exc:
            error = ProtocolError(400, f"invalid method: {exc}")
        except httptools.HttpParserError as exc:
            error = ProtocolError(400, str(exc) or "malformed request")
        else:
            self._data = b""  # the parser keeps no reference to what it was fed
            if self.upgraded_data is not None:
                return events
            if not self._in_head:
                self._window = None
                return events
            if self._window is None:
                self._window = bytearray(data)
            else:
                self._window += data  # bounded by max_head_bytes, below
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                error = ProtocolError(431, "request header section too large")
            elif self.budget is None or self.budget.take(len(data)):
                self._charged += len(data) if self.budget is not None else 0
                return events
            else:
                self.budget.refuse("a request head was refused with 503")
                error = ProtocolError(503, "server busy: too much buffered request data")
        self._data = b""
        self._window = None
        self.finished = True
        self._uncharge()
        error.events = events
        raise error

    def _route(self, buf: bytes) -> None:
        """Feed llhttp ``buf`` one framed piece at a time (see the module's docstring).

        A head ends at the first CRLF CRLF (llhttp refuses bare LF); a
        Content-Length body is passed through; a chunked body is decoded here
        and re-encoded without extensions. After each piece, llhttp's view
        (headers complete, body bytes, message complete) must be ours.
        """
        parser = self._parser
        pos = 0
        end = len(buf)
        mode = self._mode
        view: memoryview | None = None  # body slices without copies, made when needed
        out: list = []  # the chunked bytes for llhttp, fed once per buffer or message
        while pos < end:
            if mode == _HEAD:
                tail = self._tail
                cut = -1
                if tail:
                    i = (tail + buf[pos : pos + 3]).find(b"\r\n\r\n")
                    if i >= 0:
                        cut = pos + i + 4 - len(tail)
                if cut < 0:
                    i = buf.find(b"\r\n\r\n", pos)
                    if i >= 0:
                        cut = i + 4
                if cut < 0:
                    piece = buf[pos:] if pos else buf
                    stripped = piece.rstrip(b" \t")
                    if len(stripped) < len(piece) and b"\t" in piece[len(stripped) :] and (
                        self._in_head or stripped.strip(b"\r\n")
                    ):  # trailing OWS with an HTAB: what follows decides whether it ends a line
                        self._held = piece[len(stripped) :]
                        piece = stripped
                    start, pos = pos, end
                else:
                    piece = buf[pos:cut]
                    start, pos = pos, cut
                if b"\t" in piece:
                    piece = _TRAILING_TAB.sub(_spaces, piece)
                try:
                    parser.feed_data(piece)
                except httptools.HttpParserUpgrade as exc:
                    self.finished = True
                    self.upgraded_data = bytes(buf[start + exc.args[0] :])
                    self._held = b""
                    return
                self._tail = (tail + piece[-3:])[-3:]
                if not self._headers_done:
                    continue
                self._headers_done = False
                self._tail = b""
                request = self._head_request
                self._head_request = None
                if cut < 0 or self._body_bytes:
                    raise ProtocolError(400, "request framing disagreement (head)")
                if not self._in_message:
                    if request is not None and request.has_body:
                        raise ProtocolError(400, "request framing disagreement (body)")
                elif request is None or not request.has_body:
                    raise ProtocolError(400, "request framing disagreement (no body)")
                elif request.chunked:
                    mode = _CHUNK_SIZE
                    self._expected = 0
                    self._line = b""
                else:
                    mode = _LENGTH
                    self._remaining = request.content_length or 0
            elif mode == _LENGTH:
                if view is None:
                    view = memoryview(buf)
                n = min(self._remaining, end - pos)
                parser.feed_data(view[pos : pos + n] if pos or n < end else buf)
                pos += n
                self._remaining -= n
                if self._in_message != (self._remaining > 0):
                    raise ProtocolError(400, "request framing disagreement (length)")
                if not self._remaining:
                    mode = _HEAD
            else:  # a chunked body: checked here, passed on as it is but for extended size lines
                if view is None:
                    view = memoryview(buf)
                pos, mode = self._chunked(buf, view, pos, mode, out)
        self._mode = mode
        if out:
            self._flush(out, False)

    def _chunked(self, buf: bytes, view: memoryview, pos: int, mode: int, out: list) -> tuple[int, int]:
        """Decode chunked framing from ``pos``; return where it stopped (the message's end or
        the buffer's) and the mode. The bytes go to ``out`` as they are, except a size line
        with extensions, which becomes ``HEX CRLF``; at the message's end, llhttp is fed."""
        end = len(buf)
        seg = pos  # start of the bytes passed on as they are
        while pos < end:
            if mode == _CHUNK_DATA:
                n = self._remaining
                if n > end - pos:
                    self._expected += end - pos
                    self._remaining = n - (end - pos)
                    pos = end
                    break
                pos += n
                self._expected += n
                self._remaining = 0
                mode = _CHUNK_CRLF
                self._crlf = 0
            elif mode == _CHUNK_SIZE:
                line = self._line
                nl = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE - len(line))
                if nl < 0:
                    if len(line) + end - pos >= _MAX_CHUNK_LINE:
                        raise ProtocolError(400, "chunk size line too long")
                    self._line = line + buf[pos:]
                    if seg < pos:
                        out.append(view[seg:pos])
                    return end, mode  # the partial line is held, not passed on yet
                if line:  # a line cut by the previous feed: passed on rebuilt
                    line += buf[pos : nl + 1]
                    self._line = b""
                    if seg < pos:
                        out.append(view[seg:pos])
                    seg = -1
                else:
                    line = buf[pos : nl + 1]
                if line[-2:] == b"\r\n" and len(line) > 2 and not line[:-2].strip(_HEXDIGITS):
                    digits = len(line) - 2  # the usual line: HEX CRLF
                else:
                    match = _CHUNK_LINE.fullmatch(line)
                    if match is None:
                        raise ProtocolError(400, "invalid chunk size line")
                    digits = match.end(1)
                size = int(line[:digits], 16)
                if size > self.limits.max_body_size - self._expected:
                    raise ProtocolError(413, "request body too large")
                if seg < 0 or digits + 2 != len(line):  # cut, or with extensions: canonical
                    if 0 <= seg < pos:
                        out.append(view[seg:pos])
                    out.append(b"%x\r\n" % size)
                    seg = nl + 1
                pos = nl + 1
                if size and pos + size + 2 <= end:  # the whole chunk is here: no state to keep
                    if not buf.startswith(b"\r\n", pos + size):
                        raise ProtocolError(400, "chunk data not followed by CRLF")
                    pos += size + 2
                    self._expected += size
                    continue
                if size:
                    mode = _CHUNK_DATA
                    self._remaining = size
                else:
                    mode = _TRAILERS
                    self._tail = b"\r\n"  # the last chunk's CRLF: CRLF CRLF ends the section
                    self._trailer_bytes = 0
            elif mode == _CHUNK_CRLF:
                if not self._crlf and buf.startswith(b"\r\n", pos):
                    pos += 2
                else:
                    if buf[pos] != (13 if not self._crlf else 10):
                        raise ProtocolError(400, "chunk data not followed by CRLF")
                    pos += 1
                    self._crlf += 1
                    if self._crlf < 2:
                        continue
                mode = _CHUNK_SIZE
            else:  # _TRAILERS: passed as they are; llhttp parses them (on_header)
                tail = self._tail
                cut = -1
                i = (tail + buf[pos : pos + 3]).find(b"\r\n\r\n")
                if i >= 0:
                    cut = pos + i + 4 - len(tail)
                else:
                    i = buf.find(b"\r\n\r\n", pos)
                    if i >= 0:
                        cut = i + 4
                stop = end if cut < 0 else cut
                self._trailer_bytes += stop - pos
                if self._trailer_bytes > self.limits.max_head_bytes:
                    raise ProtocolError(431, "trailer section too large")
                self._tail = (tail + buf[max(pos, stop - 3) : stop])[-3:]
                pos = stop
                if cut >= 0:
                    out.append(view[seg:pos] if seg or pos < end else buf)
                    self._mode = _HEAD
                    self._tail = b""
                    self._flush(out, True)
                    out.clear()
                    return pos, _HEAD
        if seg < pos:
            out.append(view[seg:pos] if seg or pos < end else buf)
        return pos, mode

    def _flush(self, out: list, done: bool) -> None:
        """Feed llhttp the canonical chunked bytes; its body count and end must be ours."""
        self._parser.feed_data(out[0] if len(out) == 1 else b"".join(out))
        if self._body_bytes != self._expected or self._in_message == done:
            raise ProtocolError(400, "request framing disagreement (chunked)")

    def _uncharge(self) -> None:
        if self._charged:
            self.budget.give(self._charged)  # type: ignore[union-attr]
            self._charged = 0

    def close(self) -> None:
        """The connection is gone: return what the budget holds for a partial head, drop it."""
        self._uncharge()
        self._headers = []
        self._url = b""
        self._window = None
        self._held = b""
        self._line = b""
        self.finished = True

    # httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._in_message = True
        self._head_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise ProtocolError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers: list[tuple[bytes, bytes]]
        if self._in_head:
            headers = self._headers
        else:  # after the body: a chunked trailer field, never one of the head's
            trailers = self._trailers
            if trailers is None:
                trailers = self._trailers = []
            headers = trailers
        if len(headers) >= self.limits.max_header_count:
            raise ProtocolError(431, "too many header fields")
        if len(name) + len(value) + 2 > self.limits.max_header_size:
            raise ProtocolError(431, "header field too large")
        if value[-1:] in (b" ", b"\t"):
            value = value.rstrip(b" \t")  # OWS is not part of the value (RFC 9110 5.5); llhttp trims the left
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._uncharge()
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ProtocolError(505 if version[:1] not in ("0", "1") else 400, "unsupported HTTP version")
        self._check_protocol_name()
        content_length = None
        chunked = False
        codings: list[bytes] = []
        expect_continue = False
        upgrade = None
        hosts = 0
        for name, value in self._headers:
            if len(name) not in _SPECIAL_LENGTHS:
                continue  # most fields: no need to lower-case them
            lname = name.lower()
            if lname == b"host":
                hosts += 1
            elif lname == b"content-length":
                content_length = int(value)  # llhttp has checked the digits and duplicates
            elif lname == b"transfer-encoding":
                if version == "1.0":
                    raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
                # several fields are one list (RFC 9110 5.3): judged after the loop
                codings += [c.strip().lower() for c in value.split(b",")]
            elif lname == b"expect":
                if value.strip().lower() == b"100-continue":
                    expect_continue = version == "1.1"
                else:
                    raise ProtocolError(417, "unsupported expectation")
            elif lname == b"upgrade":
                upgrade = value
        if codings:
            if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                # RFC 9112 6.3: chunked not last (or twice): the body length is unknowable
                raise ProtocolError(400, "chunked must be the final transfer coding, once")
            if len(codings) > 1:
                # the server decodes no other coding: never pass a still-encoded body on (6.1)
                raise ProtocolError(501, "unsupported transfer coding")
            chunked = True
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise ProtocolError(400, "an HTTP/1.1 request needs exactly one Host header")
        limit = self.limits.max_body_size
        if content_length is not None and content_length > limit:
            raise ProtocolError(413, "request body too large")
        url = self._url
        if url[:1] == b"/":
            path, sep, query = url.partition(b"?")
            if b"#" in query:
                query = query.partition(b"#")[0]
        elif url == b"*":
            path, query = b"*", b""
        else:
            try:
                parsed: Any = httptools.parse_url(url)  # fields may be None, whatever the stubs say
            except httptools.HttpParserInvalidURLError:
                raise ProtocolError(400, "invalid request target") from None
            # (not `parsed.path or b"/"`: the compiled build checks the operand's type first)
            parsed_path = parsed.path
            path = parsed_path if parsed_path else b"/"
            parsed_query = parsed.query
            query = parsed_query if parsed_query else b""
            if parsed.host and parsed.schema:
                # absolute-form: the target's authority is the Host (RFC 9112 3.2.2)
                host = b"[" + parsed.host + b"]" if b":" in parsed.host else parsed.host
                authority = host if parsed.port is None else b"%b:%d" % (host, parsed.port)
                self._headers = [h for h in self._headers if h[0].lower() != b"host"]
                self._headers.append((b"Host", authority))
        if not parser.should_upgrade():
            upgrade = None
        self._trailers = None
        self._request = request = Request(
                parser.get_method().decode("ascii"),
                url,
                path,
                query,
                version,
                self._headers,
                self._note_keep_alive(parser.should_keep_alive()),
                expect_continue,
                content_length,
                chunked,
                upgrade,
        )
        self._events.append(request)
        self._head_request = request
        self._headers_done = True

    def _check_protocol_name(self) -> None:
        """llhttp also parses RTSP/1.0 and ICE/1.0 request lines as version 1.0: refuse them.

        The request line is in the bytes seen since the head began; it is the
        first place where the target is followed by a space and a protocol name.
        """
        window = self._data if self._window is None else self._window + self._data
        needle = b" " + self._url + b" "
        at = window.find(needle, self._search_from)
        end = at + len(needle)
        if at < 0 or window[end : end + 5] != b"HTTP/":
            raise ProtocolError(400, "not an HTTP request line")
        self._search_from = end

    def _note_keep_alive(self, keep_alive: bool) -> bool:
        self._keep_alive = keep_alive
        return keep_alive

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_size:
            raise ProtocolError(413, "request body too large")
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._in_message = False
        request = self._request
        if request is not None:
            self._request = None
            if self._trailers:
                request.trailers = self._trailers
                self._trailers = None
        self._events.append(END_OF_MESSAGE)


# Response side ------------------------------------------------------------

# (second, value) in ONE tuple, swapped whole: a thread never sees one second's
# number with another second's text, also on a free-threaded CPython.
_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header value, computed at most once a second (any thread)."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return cached[1]


_NO_BODY_STATUS = frozenset({204, 304})


class ResponseFramer:
    """Frames one response body after its head.

    How the body is delimited is decided by ``build_response``: the app's
    Content-Length (never more bytes than declared), else chunked for HTTP/1.1,
    else the connection close. ``keep_alive`` is False once the connection must
    be closed after this response.
    """

    __slots__ = ("chunked", "remaining", "no_body", "keep_alive", "status_code", "sent", "dropped")

    def __init__(self, status_code: int, no_body: bool, keep_alive: bool) -> None:
        self.status_code = status_code
        self.no_body = no_body
        self.keep_alive = keep_alive
        self.chunked = False
        self.remaining: int | None = None  # bytes still owed under Content-Length
        self.sent = 0  # body bytes sent, for the access log
        self.dropped = 0  # body bytes past the Content-Length, not sent

    def body(self, data: bytes) -> bytes:
        """Frame a body chunk; bytes past a declared Content-Length are dropped."""
        if self.no_body or not data:
            return b""
        if self.chunked:
            self.sent += len(data)
            return b"%x\r\n%b\r\n" % (len(data), data)
        remaining = self.remaining
        if remaining is not None:
            if len(data) > remaining:
                self.dropped += len(data) - remaining
                data = data[:remaining]
            self.remaining = remaining - len(data)
        self.sent += len(data)
        return data

    def end(self) -> bytes:
        """Close the body; a body shorter than its Content-Length forces a close."""
        if self.no_body:
            return b""
        if self.chunked:
            return b"0\r\n\r\n"
        if self.remaining:
            self.keep_alive = False
        return b""

    def length_mismatch(self) -> str | None:
        """After ``end()``: how the body missed its Content-Length, or None."""
        if self.no_body:
            return None
        if self.remaining:
            return f"{self.remaining} bytes shorter than its Content-Length (connection closed)"
        if self.dropped:
            return f"{self.dropped} bytes longer than its Content-Length (the extra bytes were dropped)"
        return None


# The app's head, protocol-neutral (status code + header list, ``close`` for an
# app's Connection: close, and the HTTP/1.1 serialisation cached on it): see
# streams.ResponseHead.
AppHead = ResponseHead


def encode_head(status: str, headers: list[tuple[str, str]]) -> ResponseHead:
    """A validated status and header list (see ``wsgi.check_headers``) as a head.

    A ``Connection: close`` left in the list by the checks is not kept in the
    head's fields: it becomes ``close`` and the server writes its own Connection field.
    """
    return ResponseHead(status, headers)


def build_response(
    method: str,
    http_version: str,
    keep_alive: bool,
    status: str | ResponseHead,
    headers: list[tuple[str, str]] | None = None,
    server_header: bytes | None = b"wsgiplus",
    known_length: int | None = None,
) -> tuple[bytes, ResponseFramer]:
    """Serialise a response head; return it with the framer for the body.

    ``status`` and ``headers`` are the app's, already validated, or an ``AppHead``
    made from them (its ``h1_lines()`` is used). ``known_length`` is the whole body's size when the server
    knows it before sending the head (a one-element list): no chunked framing.
    """
    app = status if isinstance(status, ResponseHead) else ResponseHead(status, headers or [])
    code = app.status_code
    no_body = method == "HEAD" or code in _NO_BODY_STATUS or code < 200
    framer = ResponseFramer(code, no_body, keep_alive and not app.close)
    h1 = app.h1
    lines = [h1 if h1 is not None else app.h1_lines()]
    if app.content_length is not None:
        framer.remaining = app.content_length
    elif code in _NO_BODY_STATUS or code < 200:
        pass
    elif known_length is not None:
        framer.remaining = known_length
        lines.append(b"Content-Length: %d\r\n" % known_length)
    elif no_body:
        pass  # HEAD with an unknown length: say nothing rather than guess
    elif http_version == "1.1":
        framer.chunked = True
        lines.append(b"Transfer-Encoding: chunked\r\n")
    else:
        framer.keep_alive = False  # HTTP/1.0: the close delimits the body
    if server_header:
        lines += (b"Server: ", server_header, b"\r\n")
    lines += (b"Date: ", http_date(), b"\r\n")
    if not framer.keep_alive:
        lines.append(b"Connection: close\r\n\r\n")
    elif http_version == "1.0":
        lines.append(b"Connection: keep-alive\r\n\r\n")
    else:
        lines.append(b"\r\n")
    return b"".join(lines), framer


def error_page(
    status: int, reason: str = "", keep_alive: bool = False, server_header: bytes | None = None
) -> tuple[bytes, int]:
    """A complete small plain-text response for errors the server answers itself,
    and the size of its body (for the access record)."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n{reason}\n".encode("latin-1", "replace") if reason else f"{status} {phrase}\n".encode()
    head = [
        f"HTTP/1.1 {status} {phrase}\r\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
    ]
    if server_header:
        head += (b"Server: ", server_header, b"\r\n")
    head += (
        b"Date: " + http_date() + b"\r\n",
        b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n",
    )
    return b"".join(head) + body, len(body)


def error_response(
    status: int, reason: str = "", keep_alive: bool = False, server_header: bytes | None = None
) -> bytes:
    """A complete small plain-text response for errors the server answers itself."""
    return error_page(status, reason, keep_alive, server_header)[0]
