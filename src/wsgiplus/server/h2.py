"""HTTP/2 on the seam: one ``H2Connection`` per socket, one ``H2Stream`` per request.

The sans-I/O ``protocols.h2.H2Protocol`` owns the frames; this module is its
asyncio side. Every method here runs on the loop thread except the
``Stream`` methods the runner calls from its pool thread (``start`` /
``data`` / ``end``), which only push neutral items (a head, bytes, the end)
into the stream's outbox: h2's connection object is not thread-safe, so all
encoding happens on the loop, in ``deliver``.

Each stream is an exchange with its own environ, runner, context and deadline
(``Connection.run_exchange``), so streams suspend independently: a stream
waiting on a future holds no thread and does not hold up the others.
Request bodies are buffered on the loop (``BodyBuffer``) before the app runs,
as for HTTP/1.1. Response bodies go into the protocol's per-stream buffer;
the protocol frames what the peer's windows allow whenever the transport can
take more, and a stream whose buffer is over its high-water mark is paused
(its runner parks, holding no thread) until the protocol reports it writable.

A connection becomes HTTP/2 in three ways: the client preface on a plain
listener (prior knowledge, detected by ``HTTPConnection``), ``Upgrade: h2c``
on an HTTP/1.1 request, and ALPN ``h2`` on TLS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

from ..protocols.h2 import (
    ConnectionTerminated,
    ErrorCodes,
    H2Protocol,
    RequestData,
    RequestEnded,
    RequestReceived,
    StreamReset,
)
from ..protocols.http11 import Request, http_date
from ..runner.wsgi import BodyBuffer
from .connection import Connection
from .streams import ExchangeRecord, ResponseHead, Stream

if TYPE_CHECKING:
    from ..runner.core import Runner
    from .core import Server

log = logging.getLogger("wsgiplus.error")

__all__ = ["H2Connection", "H2Stream"]

_END = object()  # outbox item: the body is complete


class _Info:
    """Outbox item: a 1xx before the head (``wsgi.early_hints``)."""

    __slots__ = ("status", "headers")

    def __init__(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = headers
_NO_BODY_STATUS = frozenset({204, 304})
_LINGER = 1.0  # seconds a connection reads and drops after a GOAWAY for an error
_UPGRADE_HOP = frozenset({b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"proxy-connection",
                          b"transfer-encoding", b"te"})


def _fields(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """The app's header fields as HTTP/2 wants them (lowercase names), cached on the head."""
    fields = head.h2
    if fields is None:
        fields = head.h2 = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in head.headers]
    return fields


class H2Stream(Stream):
    """One HTTP/2 request/response: the runner's ``Stream`` for that exchange."""

    __slots__ = ("conn", "stream_id", "request", "body", "trailers", "runner", "method", "no_body",
                 "remaining", "short", "head_sent", "_head")

    def __init__(self, conn: H2Connection, stream_id: int, request: Request) -> None:
        super().__init__(conn.loop, ExchangeRecord(request.method, conn.remote))
        self.conn = conn
        self.stream_id = stream_id
        self.request: Request | None = request
        self.body = BodyBuffer(conn.config.body_spool_size, conn.server.budget) if request.has_body else None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.runner: Runner | None = None
        self.method = request.method
        self.no_body = request.method == "HEAD"
        self.remaining: int | None = None  # body bytes the app's Content-Length still allows
        self.short = False  # the app sent less than its Content-Length
        self.head_sent = False
        self._head: tuple[ResponseHead, int | None] | None = None  # loop: not sent yet

    # -- pool thread: the runner's step --------------------------------------------

    def start(self, head: ResponseHead, known_length: int | None) -> bool:
        record = self.record
        record.status = head.status_code
        record.response_headers = head.headers
        return self._push((head, known_length), 0)

    def data(self, data: bytes) -> bool:
        return self._push(data, len(data))

    def end(self) -> None:
        self._push(_END, 0)

    def informational(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._push(_Info(status, headers), 0)
        self.request_flush()  # hints are for now, not with the head

    # -- loop thread -------------------------------------------------------------------

    def deliver(self, items: list[Any]) -> None:
        proto = self.conn.proto
        sid = self.stream_id
        for item in items:
            if type(item) is tuple:
                self._head = item
            elif type(item) is _Info:
                if self._head is None and not self.head_sent:
                    fields = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in item.headers]
                    proto.send_informational(sid, item.status, fields)
            elif item is _END:
                if self._head is not None:
                    self._send_head(end=True)
                elif not self.no_body and not self.short:
                    if self.remaining:
                        self.short = True  # completes as an abort: never a complete-looking body
                    else:
                        proto.end_stream(sid)
            else:
                if self._head is not None:
                    self._send_head(end=False)
                if self.no_body or self.short:
                    continue
                remaining = self.remaining
                if remaining is not None:
                    if len(item) > remaining:
                        item = item[:remaining]  # the app's Content-Length is never exceeded
                    self.remaining = remaining - len(item)
                    if not item:
                        continue
                self.record.bytes_sent += len(item)
                proto.send_data(sid, item)
        self.conn.schedule_flush()
        if not self.paused and not proto.writable(sid):
            self.pause()

    def _send_head(self, end: bool) -> None:
        head, known_length = self._head  # type: ignore[misc]
        self._head = None
        status = head.status_code
        if status in _NO_BODY_STATUS or status < 200:
            self.no_body = True
        fields = list(_fields(head))
        if head.content_length is not None:
            self.remaining = head.content_length
        elif known_length is not None and not (known_length == 0 and self.method == "HEAD"):
            fields.append((b"content-length", b"%d" % known_length))
        server_header = self.conn.server.server_header
        if server_header:
            fields.append((b"server", server_header))
        fields.append((b"date", http_date()))
        if self.no_body:
            end = True  # HEAD, 1xx, 204, 304: the head is the whole response
        elif end and self.remaining:
            self.short = True  # Content-Length promised, nothing sent
            end = False
        self.head_sent = True
        self.conn.proto.send_headers(self.stream_id, status, fields, end_stream=end)

    def complete(self) -> None:
        if self.short and not self.disconnected:
            self.conn.proto.reset_stream(self.stream_id, ErrorCodes.INTERNAL_ERROR)
            self.conn.schedule_flush()
        self.conn.stream_done(self)

    def error(self, status: int, reason: str = "") -> None:
        record = self.record
        record.status = status
        record.response_headers = []
        if not self.disconnected:
            phrase = HTTPStatus(status).phrase
            body = f"{status} {phrase}\n{reason}\n".encode("latin-1", "replace") if reason else f"{status} {phrase}\n".encode()
            fields = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
            server_header = self.conn.server.server_header
            if server_header:
                fields.append((b"server", server_header))
            fields.append((b"date", http_date()))
            proto = self.conn.proto
            if proto.send_headers(self.stream_id, status, fields):
                proto.send_data(self.stream_id, body, end_stream=True)
                record.bytes_sent = len(body)
            self.conn.schedule_flush()
        self.conn.stream_done(self)

    def abort(self, reason: str) -> None:
        if not self.disconnected:
            self.conn.proto.reset_stream(self.stream_id, ErrorCodes.INTERNAL_ERROR)
            self.conn.schedule_flush()
        self.conn.stream_done(self)


class H2Connection(Connection, asyncio.Protocol):
    """HTTP/2 on one transport. Every method runs on the loop thread."""

    protocol_name: ClassVar[str] = "HTTP/2"

    __slots__ = (
        "config",
        "template",
        "proto",
        "streams",
        "write_paused",
        "_flush_scheduled",
        "_linger_until",
    )

    def __init__(self, server: Server, template: dict[str, Any]) -> None:
        self.server = server
        self.config = server.config
        self.loop = server.loop
        self.template = template
        self.transport: asyncio.Transport | None = None
        self.remote: tuple[str, int] | None = None
        self.proto = H2Protocol(server.config.h2_limits, clock=server.loop.time)
        self.streams: dict[int, H2Stream] = {}
        self.requests = 0
        self.disconnected = False
        self.closing = False
        self.draining = False
        self.write_paused = False
        self._flush_scheduled = False
        self._linger_until = 0.0  # after our GOAWAY: close at this loop.time()

    # -- becoming HTTP/2 -------------------------------------------------------------

    @classmethod
    def take_over(cls, old: Any, data: bytes = b"", upgrade: tuple[bytes, Request, BodyBuffer | None] | None = None) -> H2Connection:
        """Replace the HTTP/1.1 connection ``old`` on its transport (prior knowledge,
        ALPN, or after a ``101`` for ``Upgrade: h2c``) and feed it ``data``."""
        server = old.server
        conn = cls(server, old.template)
        transport = old.transport
        conn.transport = transport
        conn.remote = old.remote
        conn.draining = old.draining
        server.connections.discard(old)
        server.connections.add(conn)
        transport.set_protocol(conn)
        if upgrade is None:
            conn.proto.initiate()
        else:
            settings, request, body = upgrade
            # the HTTP/1.1 request goes on as stream 1, without its hop-by-hop fields
            request.headers = [(n, v) for n, v in request.headers if n.lower() not in _UPGRADE_HOP]
            request.http_version = "2"
            conn.proto.initiate_upgrade(settings, request)
            stream = conn.streams[1] = H2Stream(conn, 1, request)
            stream.body = body
            conn._start(stream)
        if conn.draining:
            conn.proto.goaway()
        conn.flush_output()
        if data:
            conn._receive(data)  # counted in bytes_in by the HTTP/1.1 connection already
        return conn

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover - taken over
        self.transport = transport  # type: ignore[assignment]
        self.proto.initiate()
        self.flush_output()

    def data_received(self, data: bytes) -> None:
        self.server.bytes_in += len(data)
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        if self.closing:
            return  # lingering after a GOAWAY: dropped
        events = self.proto.receive_data(data)
        if events:
            self._handle(events)
        self.flush_output()

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is gone, as for HTTP/1.1

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.closing = True
        streams = list(self.streams.values())
        for stream in streams:
            if stream.runner is None:
                self._drop(stream)
            else:
                stream.disconnect()
        self.server.connection_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.flush_output()

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    # -- events ------------------------------------------------------------------------

    def _handle(self, events: list[Any]) -> None:
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is RequestData:
                stream = streams.get(event.stream_id)
                if stream is not None and stream.body is not None:
                    stream.body.write(event.data)
            elif kind is RequestReceived:
                stream = streams[event.stream_id] = H2Stream(self, event.stream_id, event.request)
                if event.ended:
                    self._start(stream)
            elif kind is RequestEnded:
                stream = streams.get(event.stream_id)
                if stream is not None and stream.runner is None:
                    stream.trailers = event.trailers
                    self._start(stream)
            elif kind is StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    if stream.runner is None:
                        self._drop(stream)
                    else:
                        stream.disconnect()  # the runner closes the iterable, cancels its future
            elif kind is ConnectionTerminated:
                if not event.remote:
                    log.info("HTTP/2 connection from %s ended: %s", self.remote and self.remote[0], event.reason)
                self._terminated()

    def _start(self, stream: H2Stream) -> None:
        request = stream.request
        assert request is not None
        stream.request = None  # the environ has it all now
        body = stream.body
        stream.runner = self.run_exchange(
            stream,
            self.template,
            method=request.method,
            target=request.target,
            path=request.path,
            query=request.query,
            headers=request.headers,
            http_version="2",
            body=body.stream() if body is not None else None,
            chunked=request.chunked,
            trailers=stream.trailers,
        )
        stream.record.protocol = "HTTP/2.0"  # the access log's %(H)s, as gunicorn and nginx write it

    def _drop(self, stream: H2Stream) -> None:
        """A stream whose app never ran is gone."""
        self.streams.pop(stream.stream_id, None)
        stream.disconnected = True
        self.proto.release(stream.stream_id)

    def _terminated(self) -> None:
        """The protocol is over (GOAWAY sent or received): stop every stream, close.

        After a GOAWAY of ours the close lingers: the write side is shut (the
        GOAWAY goes out) and what the client still sends is read and dropped
        for up to a second, so the kernel does not answer it with a TCP reset
        that would destroy the GOAWAY before the client reads it.
        """
        for stream in list(self.streams.values()):
            if stream.runner is None:
                self._drop(stream)
            else:
                stream.disconnect()
        self.flush_output()
        transport = self.transport
        if transport is not None and not self.disconnected and transport.can_write_eof():
            self.closing = True
            transport.write_eof()
            self._linger_until = self.loop.time() + _LINGER
            return
        self.close()

    def stream_done(self, stream: H2Stream) -> None:
        """``stream``'s runner is finished (complete, error or abort): log it, release it."""
        server = self.server
        server.active -= 1
        self.requests += 1
        stream.runner = None
        record = stream.record
        record.ended_at = time.monotonic()
        server.access(self, record)
        record.environ = {}  # no cycle left for the GC
        self.streams.pop(stream.stream_id, None)
        self.proto.release(stream.stream_id)
        if not self.disconnected:
            self.schedule_flush()

    # -- output ----------------------------------------------------------------------------

    def schedule_flush(self) -> None:
        """Write the protocol's output once per loop iteration, however many streams delivered."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush_output)

    def flush_output(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or self.disconnected or self.closing:
            return  # closing: the last bytes are written (a lingering close has shut writing)
        proto = self.proto
        server = self.server
        while not self.write_paused:
            data = proto.data_to_send()
            if not data:
                break
            server.bytes_out += len(data)
            transport.write(data)
        for sid in proto.pop_writable():
            stream = self.streams.get(sid)
            if stream is not None and stream.paused:
                stream.resume()
        if proto.finished and not proto.closed and not self.closing:
            self.close()  # after a graceful GOAWAY, the last stream is done (errors: _terminated)

    # -- what the server calls -------------------------------------------------------------

    def check_timer(self, now: float) -> None:
        if self.disconnected:
            return
        if self.closing:
            if self._linger_until and now >= self._linger_until:
                self._linger_until = 0.0
                self.transport.close()  # type: ignore[union-attr]
            return
        events = self.proto.tick()
        if events:
            self._handle(events)
        self.flush_output()

    def shutdown(self) -> None:
        """Graceful stop: GOAWAY with the last stream id; the streams up to it finish."""
        self.draining = True
        if self.closing:
            return
        self.proto.goaway()
        self.flush_output()

    def close(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def is_disconnected(self) -> bool:
        return self.disconnected
