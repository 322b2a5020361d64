"""The asyncio side: connections, keep-alive, pipelining, timeouts, flow control, shutdown.

One event loop owns every socket. ``HTTPConnection`` (a ``connection.Connection``)
feeds received bytes to the sans-I/O parser, buffers request bodies (so a slow
uploader never pins a thread), answers requests strictly in order, and hands
each complete request to a ``Runner`` through its ``Exchange`` - the HTTP/1.1
``streams.Stream``, which frames the response, writes error pages and decides
keep-alive. ``Server`` holds connections of any protocol.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from threading import Lock
from typing import Any, ClassVar

from .._compiled import mypyc_attr
from ..protocols.http11 import (
    Data,
    EndOfMessage,
    MemoryBudget,
    ProtocolError,
    Request,
    RequestParser,
    ResponseFramer,
    build_response,
    error_page,
    error_response,
)
from ..runner.core import Runner, Suspensions
from ..runner.pool import ThreadPool
from ..runner.wsgi import BodyBuffer, body_time_left, early_hints_head, environ_template
from ..shell.config import Config
from ..streaming import StreamingBody
from ..websocket import websocket_request
from .connection import Connection
from .fdlimit import probe as fd_probe
from .listeners import bind_socket, describe, socket_from_fd, unix_socket_file, unlink_unix_socket
from .streams import NO_ENVIRON, ExchangeRecord, ResponseHead, Stream

log = logging.getLogger("wsgiplus.error")

__all__ = ["Connection", "Exchange", "HTTPConnection", "Server", "new_event_loop"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_RAW_SOCKET_TIMEOUT = 7 * 24 * 3600.0  # "blocking" for environ["gunicorn.socket"]

# Exchange.taken: the connection left HTTP/1.1 during this exchange
_WEBSOCKET = 1  # accept(): a WebSocketConnection has the transport
_TAKEOVER = 2  # wsgiplus.takeover: the app's own protocol has it
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
_SWITCHING_TO_H2C = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"

_HAVE_SENDFILE = hasattr(os, "sendfile")

# at most this much of one file is sent before other connections get the loop again
_SENDFILE_ROUND = 4 * 1024 * 1024


class _FileItem:
    """A file body in an exchange's outbox: ``count`` bytes of ``fd`` from ``offset``."""

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd, self.offset, self.count = fd, offset, count


class _FileTransfer:
    """A file being sent with ``os.sendfile`` (loop thread): duplicated descriptors, so the
    app closing its file, or the transport closing its socket, never leaves a stale one."""

    __slots__ = ("fd", "out", "offset", "count", "watching")

    def __init__(self, fd: int, out: int, offset: int, count: int) -> None:
        self.fd, self.out, self.offset, self.count = fd, out, offset, count
        self.watching = False


class Exchange(Stream):
    """One HTTP/1.1 request on a connection, from its head to the end of its response.

    It is the runner's ``Stream``: HTTP/1.1 framing (``build_response``,
    ``ResponseFramer``) runs in ``start`` / ``data`` / ``end`` on the app's
    pool thread (it needs no shared state); the framed bytes go through the
    outbox to the transport on the loop. Error pages, keep-alive and the
    access record are decided here and in the connection, never in the runner.
    """

    __slots__ = (
        "conn",
        "request",
        "body",
        "received",
        "runner",
        "method",
        "http_version",
        "keep_alive",
        "server_header",
        "framer",
        "_head",
        "_file",
        "taken",
        "expect_continue",
    )

    def __init__(self, conn: HTTPConnection, request: Request, spool: int,
                 budget: MemoryBudget | None = None) -> None:
        # Stream.__init__, inlined (one per request): keep in step with streams.Stream
        self.loop = conn.loop
        self.record = ExchangeRecord(request.method, conn.remote)
        self.consumer = None
        self.paused = False
        self.disconnected = False
        self._lock = Lock()
        self.outbox = None
        self._out_size = 0
        self.flush_posted = False
        self.conn = conn
        self.request: Request | None = request
        self.body: Any = BodyBuffer(spool, budget) if request.has_body else None
        self.received = False  # the whole request (body included) has arrived
        self.runner: Runner | None = None
        self.method = request.method
        self.http_version = request.http_version
        self.keep_alive = False  # set when the response starts (_start)
        self.server_header = conn.server.server_header
        self.framer: ResponseFramer | None = None
        self._head: bytes | None = None  # the serialised head, sent with the first bytes
        self._file: _FileTransfer | None = None  # a file body being sent (loop thread)
        self.taken = 0  # _WEBSOCKET / _TAKEOVER once the app switched protocols
        self.expect_continue = False  # streamed input: 100 Continue still to send on first read

    # -- pool thread (the runner's step) ----------------------------------------

    def start(self, head: ResponseHead, known_length: int | None) -> bool:
        if self.taken:
            return True  # the runner's head is never sent: the wire is another protocol's
        if known_length == 0 and self.method == "HEAD":
            known_length = None  # HEAD of an empty body: say nothing rather than guess
        lines, self.framer = build_response(
            self.method, self.http_version, self.keep_alive, head, None, self.server_header, known_length
        )
        record = self.record
        record.status = head.status_code
        record.response_headers = head.headers
        self._head = lines
        return True

    def data(self, data: bytes) -> bool:
        if self.taken:
            raise RuntimeError("the connection was handed over (WebSocket accept, takeover): "
                               "the app may yield futures, not bytes")
        framed = self.framer.body(data)  # type: ignore[union-attr]
        head = self._head
        if head is not None:
            self._head = None
            framed = head + framed
        if framed:
            return self._push(framed, len(framed))
        return not self.paused

    def end(self) -> None:
        if self.taken:
            return
        framer = self.framer
        tail = framer.end()  # type: ignore[union-attr]
        head = self._head
        if head is not None:
            self._head = None
            tail = head + tail
        if tail:
            self._push(tail, len(tail))
        mismatch = framer.length_mismatch()  # type: ignore[union-attr]
        if mismatch:
            log.warning("response body of %s %s was %s", self.method, self.record.path, mismatch)

    @property
    def takes_files(self) -> bool:  # type: ignore[override]
        return self.conn.can_sendfile

    def send_file(self, fd: int, offset: int, count: int) -> None:
        framer = self.framer
        assert framer is not None
        head = self._head
        self._head = None
        if framer.no_body:  # HEAD, 304: the head alone
            if head:
                self._push(head, len(head))
            return
        if framer.remaining is not None:
            framer.remaining -= count
        framer.sent += count
        if head:
            self._push(head, len(head))
        if count:
            self._push(_FileItem(fd, offset, count), 0)

    def informational(self, status: int, headers: list[tuple[str, str]]) -> None:
        if status == 103 and self.http_version == "1.1":  # 1.0 clients do not expect 1xx
            head = early_hints_head(headers)
            self._push(head, len(head))
            self.request_flush()

    # -- loop thread ----------------------------------------------------------------

    def deliver(self, items: list[Any]) -> None:
        conn = self.conn
        if not conn.disconnected:
            last = items[-1]
            if type(last) is _FileItem:  # send_file: the head (if any), then the file
                items = items[:-1]
            data = (items[0] if len(items) == 1 else b"".join(items)) if items else b""
            if data:
                conn.server.bytes_out += len(data)
                conn.transport.write(data)  # type: ignore[union-attr]
            if type(last) is _FileItem:
                self._begin_file(last)

    # -- a file body (send_file), on the loop ------------------------------------------

    def _begin_file(self, item: _FileItem) -> None:
        transport = self.conn.transport
        sock = transport.get_extra_info("socket")  # type: ignore[union-attr]
        try:
            fd = os.dup(item.fd)
            try:
                out = os.dup(sock.fileno())
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            log.warning("sendfile: %s; closing the connection", exc)
            transport.abort()  # type: ignore[union-attr]
            return
        self._file = _FileTransfer(fd, out, item.offset, item.count)
        self.paused = True  # the runner waits (DRAINING) until the file is sent
        self._send_file_part()

    def _send_file_part(self) -> None:
        t = self._file
        if t is None:
            return
        conn = self.conn
        transport = conn.transport
        if not transport.get_write_buffer_size():  # type: ignore[union-attr]
            budget = _SENDFILE_ROUND
            while t.count > 0:
                try:
                    n = os.sendfile(t.out, t.fd, t.offset, min(t.count, budget))
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # the peer reset the connection, or the file failed
                    log.info("sendfile to %s failed: %s", self.conn.remote and self.conn.remote[0], exc)
                    self._end_file()
                    transport.abort()  # type: ignore[union-attr]
                    return
                if n == 0:  # the file is shorter than it was: the body cannot be completed
                    log.warning("%s %s: the file shrank while it was sent; closing the connection",
                                self.method, self.record.path)
                    self._end_file()
                    transport.abort()  # type: ignore[union-attr]
                    return
                t.offset += n
                t.count -= n
                conn.server.bytes_out += n
                budget -= n
                if budget <= 0:
                    break
            if t.count <= 0:
                self._end_file()
                if not conn.write_paused:
                    Stream.resume(self)  # the runner's next step ends the body
                return
        if not t.watching:  # wait until the socket (or the transport's buffer) drains
            t.watching = True
            self.loop.add_writer(t.out, self._send_file_part)

    def _end_file(self) -> None:
        t = self._file
        if t is None:
            return
        self._file = None
        if t.watching:
            self.loop.remove_writer(t.out)
        os.close(t.out)
        os.close(t.fd)

    def resume(self) -> None:
        if self._file is None:  # while a file is sent, the transfer resumes the runner
            Stream.resume(self)

    def disconnect(self) -> None:
        self._end_file()
        Stream.disconnect(self)

    def complete(self) -> None:
        framer = self.framer
        if framer is not None:
            self.record.bytes_sent = framer.sent
        self.conn._exchange_done(self, framer.keep_alive if framer is not None else False, False)

    def error(self, status: int, reason: str = "") -> None:
        page, size = error_page(status, reason, False, self.conn.server.server_header)
        record = self.record
        record.status = status
        record.response_headers = []
        if not self.disconnected:
            self.conn.write(page)
            record.bytes_sent = size
        self.conn._exchange_done(self, False, False)

    def abort(self, reason: str) -> None:
        self._end_file()
        framer = self.framer
        if framer is not None:
            self.record.bytes_sent = framer.sent
        self.conn._exchange_done(self, False, True)


class HTTPConnection(Connection, asyncio.Protocol):
    """HTTP/1.1 on one transport. Every method runs on the loop thread."""

    protocol_name: ClassVar[str] = "HTTP/1.1"

    __slots__ = (
        "config",
        "template",
        "parser",
        "queue",
        "receiving",
        "write_paused",
        "reading_paused",
        "pending_error",
        "_deadline",
        "_on_timeout",
        "_idle",
        "_timer_kind",
        "can_sendfile",
        "upgrade_buffer",
        "upgraded",
        "raw_socket",
        "_sniff",
    )

    def __init__(self, server: Server, template: dict[str, Any]) -> None:
        self.server = server
        self.config = server.config
        self.loop = server.loop
        self.template = template
        self.parser: RequestParser | None = None  # made when bytes arrive
        self.transport: asyncio.Transport | None = None
        self.remote: tuple[str, int] | None = None
        # queue[0] is the one being answered; a list, not a deque: it holds one or
        # two (reading pauses behind a pipelined request) and is 8x smaller empty
        self.queue: list[Exchange] = []
        self.receiving: Exchange | None = None  # whose body is arriving
        self.write_paused = False
        self.disconnected = False
        self.closing = False  # closed or closing: take no more bytes
        self.draining = False  # graceful stop: answer what was sent, then close
        self.reading_paused = False
        self.pending_error: ProtocolError | None = None
        self.requests = 0
        # No TimerHandle per connection: a deadline is a float that the server's
        # sweep checks. call_later + cancel per request cost ~10 % of the loop
        # thread, and a handle per idle connection ~600 bytes.
        self._deadline = 0.0  # loop.time() when _on_timeout fires; 0.0: no timer
        self._on_timeout: Callable[[], None] | None = None
        self._timer_kind = ""
        self._idle = True  # no request in the queue: the keep-alive timer may run
        self.can_sendfile = False  # file bodies go out with os.sendfile (plain TCP / Unix, not TLS)
        self.upgrade_buffer: bytes | None = None  # bytes after an Upgrade request's head
        self.upgraded: Any = None  # the WebSocketConnection (or takeover marker) now on the transport
        self.raw_socket: socket.socket | None = None  # environ["gunicorn.socket"] (upgrades only)
        # the first bytes, while they may still be the HTTP/2 preface (None: not looking)
        self._sniff: bytes | None = b"" if server.config.http2 else None

    # -- transport callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        config = self.config
        transport.set_write_buffer_limits(high=config.write_buffer_high, low=config.write_buffer_low)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.remote = (peer[0], peer[1])
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.can_sendfile = (
            config.sendfile
            and _HAVE_SENDFILE
            and sock is not None
            and sock.family in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1))
            and transport.get_extra_info("sslcontext") is None
        )
        server = self.server
        allowed = server.connection_made(self)
        if server.stopping:  # taken from the accept queue as the server stops
            self.draining = True
        if not allowed:
            self._send_error(ProtocolError(503, "too many connections"))
            return
        if self._sniff is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                from .h2 import H2Connection

                H2Connection.take_over(self)  # ALPN chose HTTP/2
                return
        self._set_timer(config.header_timeout, self._on_header_timeout)

    def data_received(self, data: bytes) -> None:
        self.server.bytes_in += len(data)
        if self.pending_error is not None or self.closing:
            return
        if self._sniff is not None and self._sniffed(data):
            return
        if self.upgrade_buffer is not None:
            self._stash_upgraded(data)
            return
        if self._idle and self._deadline and self._timer_kind != "header":
            # first bytes of the next request: the head must now arrive in time
            self._set_timer(self.config.header_timeout, self._on_header_timeout)
        parser = self.parser
        if parser is None:
            parser = self.parser = self.server.take_parser()
        try:
            events = parser.feed(data)
        except ProtocolError as exc:
            self._handle_events(exc.events)
            self._protocol_error(exc)
            return
        if events:
            self._handle_events(events)
        if parser.upgraded_data is not None and self.upgrade_buffer is None and self.queue:
            # an Upgrade request: what follows its head is not HTTP; keep it for
            # the protocol the app may switch to (bounded: reading pauses)
            self.upgrade_buffer = b""
            self._stash_upgraded(parser.upgraded_data)
        if self.receiving is not None:
            if self.receiving.body is not None:
                self._set_body_timer(self.receiving.body)
        elif parser.idle and not parser.finished:
            # Between requests the parser holds nothing: hand it back (~1 KB less
            # for a long suspended request); the next bytes take one from the pool.
            self.parser = None
            self.server.give_parser(parser)

    def _stash_upgraded(self, data: bytes) -> None:
        self.upgrade_buffer = (self.upgrade_buffer or b"") + data
        if len(self.upgrade_buffer) > 65536 and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _sniffed(self, data: bytes) -> bool:
        """The first bytes: the HTTP/2 preface (prior knowledge) hands the transport
        to an ``H2Connection``. True when ``data`` has been dealt with here."""
        held = self._sniff
        buffered = held + data if held else data
        n = min(len(buffered), len(_H2_PREFACE))
        if buffered[:n] != _H2_PREFACE[:n]:
            self._sniff = None  # HTTP/1.x
            if held:
                self.server.bytes_in -= len(held)  # counted when they arrived
                self.data_received(buffered)
                return True
            return False
        if n < len(_H2_PREFACE):
            self._sniff = buffered  # a prefix of the preface: wait for the rest
            return True
        self._sniff = None
        from .h2 import H2Connection

        self._cancel_timer()
        H2Connection.take_over(self, buffered)
        return True

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone (as waitress does): the
        # alternative leaves a suspended request running for nobody.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self._cancel_timer()
        if self.parser is not None:
            self.parser.close()  # a partial head: return its bytes to the budget
        queue = self.queue
        self.queue = []
        for ex in queue:
            if type(ex.body) is StreamingBody:
                ex.body.fail(400, "client disconnected")  # a blocked read wakes up
            ex.disconnect()  # the runner, if started, stops the app
        self.server.connection_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue:
            self.queue[0].pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            self.queue[0].resume()

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    # -- requests -------------------------------------------------------------

    def _handle_events(self, events: Iterable[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is Data:
                self.receiving.body.write(event.data)  # type: ignore[union-attr]
            elif kind is Request:
                ex = Exchange(self, event, self.config.body_spool_size, self.server.budget)
                if ex.body is not None and self.server.stream_input and self._streams_input(event):
                    ex.body = self._streaming_body(ex)
                self.receiving = ex
                self.queue.append(ex)
                if len(self.queue) == 1:
                    self._idle = False
                    self._cancel_timer()
                    self._begin(ex)
                    if type(ex.body) is StreamingBody:
                        self._start(ex)  # the app reads the body as it comes
                elif not self.reading_paused:
                    # A pipelined request waits its turn; stop reading more.
                    self.reading_paused = True
                    self.transport.pause_reading()  # type: ignore[union-attr]
            elif kind is EndOfMessage:
                ex = self.receiving  # type: ignore[assignment]
                self.receiving = None
                ex.received = True
                if type(ex.body) is StreamingBody:
                    ex.body.finish()
                    if ex.runner is not None or ex is not self.queue[0]:
                        self._cancel_timer()
                        continue
                if ex is self.queue[0]:
                    self._cancel_timer()
                    self._start(ex)

    def _begin(self, ex: Exchange) -> None:
        """``ex`` is next to be answered: ask for its body if the client waits to be asked."""
        if type(ex.body) is StreamingBody:
            return  # asked on the app's first read (StreamingBody.want_continue)
        if ex.request.expect_continue and not ex.received:  # type: ignore[union-attr]
            self.transport.write(_CONTINUE)  # type: ignore[union-attr]

    def _start(self, ex: Exchange) -> None:
        request = ex.request
        assert request is not None
        if request.upgrade is not None and self._h2c_upgrade(ex, request):
            return
        ex.keep_alive = (
            request.keep_alive
            and not self.draining
            and request.upgrade is None
            and self.config.keepalive_timeout != 0  # 0: no keep-alive, as in gunicorn
        )
        if self.write_paused:
            ex.pause()
        ex.runner = self.run_exchange(
            ex,
            self.template,
            method=request.method,
            target=request.target,
            path=request.path,
            query=request.query,
            headers=request.headers,
            http_version=request.http_version,
            body=(ex.body if type(ex.body) is StreamingBody else ex.body.stream())
            if ex.body is not None else None,  # type: ignore[arg-type]
            chunked=request.chunked and type(ex.body) is not StreamingBody,  # streamed: no length
            trailers=request.trailers,
            prepare=self._prepare_upgrade if request.upgrade is not None else (
                self._prepare_streaming if type(ex.body) is StreamingBody else None),
        )
        ex.request = None  # the environ has it all now; a suspended request keeps less

    def _h2c_upgrade(self, ex: Exchange, request: Request) -> bool:
        """``Upgrade: h2c`` (RFC 7540 §3.2): answer 101 and go on in HTTP/2, the request
        being stream 1. False (answered over HTTP/1.1) unless HTTP/2 is on, the
        connection is plain, the request has no body, and there is exactly one valid
        ``HTTP2-Settings``."""
        if not self.config.http2 or request.upgrade.strip().lower() != b"h2c" or len(self.queue) > 1:  # type: ignore[union-attr]
            return False
        if request.has_body:
            return False  # llhttp hands what follows the head of an upgrade over as raw bytes
        if self.transport.get_extra_info("ssl_object") is not None:  # type: ignore[union-attr]
            return False  # RFC 7540 §3.3: over TLS, only ALPN
        settings = [value for name, value in request.headers if name.lower() == b"http2-settings"]
        from ..protocols.h2 import valid_upgrade_settings
        from .h2 import H2Connection

        if len(settings) != 1 or not valid_upgrade_settings(settings[0]):
            return False
        rest = (self.parser.upgraded_data if self.parser is not None else None) or b""
        self.queue.clear()
        self.receiving = None
        self._cancel_timer()
        self.transport.write(_SWITCHING_TO_H2C)  # type: ignore[union-attr]
        H2Connection.take_over(self, rest, upgrade=(settings[0], request, ex.body))
        return True

    def is_disconnected(self) -> bool:
        """True once the client has gone."""
        return self.disconnected

    # -- streaming request input (wsgiplus.streaming) ---------------------------

    def _streams_input(self, request: Request) -> bool:
        mark: Any = self.server.stream_input  # True, or the app's when=... callable
        if mark is True:
            return True
        head = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path.decode("latin-1"),
            "QUERY_STRING": request.query.decode("latin-1"),
        }
        for name, value in request.headers:
            lname = name.decode("latin-1").lower()
            if lname in ("content-type", "content-length", "expect"):
                head["HTTP_" + lname.upper().replace("-", "_")] = value.decode("latin-1")
        head["CONTENT_TYPE"] = head.pop("HTTP_CONTENT_TYPE", "")
        head["CONTENT_LENGTH"] = head.pop("HTTP_CONTENT_LENGTH", "")
        try:
            return bool(mark(head))
        except Exception:
            log.exception("streaming_input(when=...) raised: buffering this body")
            return False

    def _streaming_body(self, ex: Exchange) -> StreamingBody:
        def pause(paused: bool) -> None:
            if self.disconnected or self.transport is None:
                return
            if paused:
                if not self.reading_paused:
                    self.reading_paused = True
                    self.transport.pause_reading()
            elif self.reading_paused and len(self.queue) <= 1 and self.pending_error is None:
                self.reading_paused = False
                self.transport.resume_reading()
                if self.receiving is ex and ex.body is not None:
                    self._set_body_timer(ex.body)  # type: ignore[arg-type]

        def want_continue() -> None:
            request_expects = ex.expect_continue
            if request_expects and not ex.received and not self.disconnected and ex.runner is not None:
                ex.expect_continue = False
                self.transport.write(_CONTINUE)  # type: ignore[union-attr]

        ex.expect_continue = bool(ex.request is not None and ex.request.expect_continue)
        return StreamingBody(self.loop, pause, want_continue, self.config.write_buffer_high)

    def _prepare_streaming(self, environ: dict[str, Any], runner: Runner) -> None:
        body = environ["wsgi.input"]
        environ["wsgiplus.input"] = body
        environ["wsgi.input_terminated"] = True  # read to b"": a chunked body has no length
        environ.pop("HTTP_TRANSFER_ENCODING", None)

    def _input_failed(self, ex: Exchange, status: int, reason: str) -> None:
        """A streamed body broke (413/400/408): the app's reads fail, the client gets ``status``
        if the response has not started, and the connection closes after it."""
        ex.body.fail(status, reason)  # type: ignore[union-attr]
        self.closing = True  # take no more bytes; _exchange_done closes
        if self.receiving is ex:
            self.receiving = None
        runner = ex.runner
        if runner is not None:
            runner.stop_for_input(status, reason)

    # -- leaving HTTP/1.1: WebSockets, the raw socket, takeover ----------------

    def _prepare_upgrade(self, environ: dict[str, Any], runner: Runner) -> None:
        """An upgrade request's environ, before the app is called: the ways out of HTTP/1.1."""
        upgrade = websocket_request(environ, self.server)
        if upgrade is not None:
            upgrade._upgrade = functools.partial(self._upgrade_to_websocket, runner)
        environ["wsgiplus.takeover"] = functools.partial(self._takeover_from_app, runner)
        raw = self.raw_socket = self._raw_socket()
        if raw is not None:
            environ["gunicorn.socket"] = raw

    def _raw_socket(self) -> socket.socket | None:
        """A duplicate of the connection's socket, for libraries that speak on it.

        Only an upgrade request gets one (it is never followed by another request
        on the connection), and reading stops while the app runs so the loop takes
        no byte the app should read. The duplicate is closed when the request ends.
        """
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return None  # under TLS the raw bytes are ciphertext: no use to the app
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            raw = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
        except OSError:
            return None
        # O_NONBLOCK is shared with the loop's descriptor, so the duplicate must stay
        # non-blocking; a timeout makes Python wait in poll(), which reads as blocking
        raw.settimeout(_RAW_SOCKET_TIMEOUT)
        if not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        return raw

    def _takeover_from_app(self, runner: Runner,
                           protocol_factory: Callable[[], asyncio.BaseProtocol]) -> None:
        """``environ["wsgiplus.takeover"](factory)``, on the app's pool thread.

        The runner sends no response from now on; the switch is made on the
        loop, before the wake-up of the step that asked for it.
        """
        runner.take_over()
        stream = runner.stream
        if isinstance(stream, Exchange):
            stream.taken = _TAKEOVER  # start/data/end are the step's: set here, not on the loop
        self.loop.call_soon_threadsafe(self._takeover, runner, protocol_factory)

    def _takeover(self, runner: Runner, protocol_factory: Callable[[], asyncio.BaseProtocol]) -> None:
        ex = runner.stream
        if self.disconnected or self.transport is None or not isinstance(ex, Exchange):
            return
        transport = self.transport
        trailing, self.upgrade_buffer = self.upgrade_buffer or b"", None
        self.upgraded = _TakenOver()
        self._cancel_timer()
        server = self.server
        server.connection_lost(self)  # forgotten: no timeouts, limits or shutdown
        runner.as_websocket(server.websocket_suspensions)
        record = ex.record
        record.status = 101
        record.ended_at = time.monotonic()
        server.access(self, record)  # the one line: the hand-over itself
        try:
            protocol = protocol_factory()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if trailing:
                protocol.data_received(trailing)  # type: ignore[attr-defined]
        except Exception:
            log.exception("takeover: the app's protocol failed to start; closing the connection")
            transport.abort()
            return
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def _upgrade_to_websocket(self, runner: Runner, head: bytes, proto: Any, ws: Any) -> None:
        """``accept()``, on the app's pool thread: the runner sends no HTTP response now.

        The connection object is made here so the app can use the socket at once:
        its calls are posted to the loop after the switch below.
        """
        from ..websocket import WebSocketConnection

        config = self.config
        conn = WebSocketConnection(
            proto, ws, self.loop,
            write_buffer_high=config.write_buffer_high,
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
            idle_timeout=config.ws_idle_timeout,
            timeout=config.ws_timeout,
            on_end=self._websocket_ended,
            on_lost=self._websocket_lost,
        )
        conn.server = self.server
        conn.runner = runner
        conn.exchange = runner.stream
        runner.take_over()
        conn.exchange.taken = _WEBSOCKET  # start/data/end are the step's: set here
        self.loop.call_soon_threadsafe(self._switch_to_websocket, runner, head, conn)

    def _switch_to_websocket(self, runner: Runner, head: bytes, conn: Any) -> None:
        server = self.server
        config = self.config
        ex = conn.exchange
        ex.record.status = 101
        conn.remote = self.remote
        self.upgraded = conn
        runner.as_websocket(server.websocket_suspensions)
        if self.raw_socket is not None:  # not needed: the app took the thread-free path
            self.raw_socket.close()
            self.raw_socket = None
        if self.parser is not None:  # finished after the upgrade; an idle socket keeps less
            self.parser.close()
            self.parser = None
        runner.environ.pop("wsgiplus.takeover", None)  # one way out is taken
        trailing, self.upgrade_buffer = self.upgrade_buffer or b"", None
        if self.disconnected:
            conn.connection_lost(None)
            return
        self._cancel_timer()
        server.connections.discard(self)
        server.connections.add(conn)
        limit = config.max_websockets
        if limit is not None and server.websockets >= limit:
            log.warning("%d WebSockets open (max_websockets): answering 503", limit)
            ex.record.status = 503
            conn.refuse(self.transport, error_response(503, "too many WebSockets", False,
                                                       server.server_header))
            return
        server.websockets += 1
        conn.counted = True
        conn.start(self.transport, head, trailing)  # type: ignore[arg-type]
        self.reading_paused = False

    def _websocket_lost(self, conn: Any) -> None:
        server = self.server
        if conn.counted:
            conn.counted = False
            server.websockets -= 1
        server.connection_lost(conn)
        runner = conn.runner
        if runner is not None:
            # the app sees None from receive(); one waiting on anything else is stopped
            self.loop.call_soon(runner.stop_if_suspended, "disconnect")

    def _websocket_ended(self, conn: Any) -> None:
        """The socket is closed and its app has finished: the access line."""
        conn.runner = None
        record = conn.exchange.record
        record.bytes_sent = conn.proto.bytes_out
        record.ended_at = time.monotonic()
        record.environ["wsgiplus.websocket.close_code"] = conn.ws.close_code
        self.server.access(conn, record)
        record.environ = NO_ENVIRON

    def _exchange_done(self, ex: Exchange, keep_alive: bool, abort: bool) -> None:
        """``ex``'s response is complete (or cut short, ``abort``): log it, go on or close."""
        server = self.server
        if self.raw_socket is not None:
            # the app's duplicate (an upgrade request is the connection's last): the
            # app has returned, so nothing of it reads the socket any more
            self.raw_socket.close()
            self.raw_socket = None
        if ex.taken:
            # the exchange's app has ended; the wire is another protocol's: its own
            # end writes the access line (WebSocket), or the hand-over did (takeover)
            server.active -= 1
            self.requests += 1
            ex.runner = None
            self.upgraded.app_finished(abort)
            return
        server.active -= 1
        self.requests += 1
        ex.runner = None
        record = ex.record
        record.ended_at = time.monotonic()
        server.access(self, record)
        record.environ = NO_ENVIRON  # environ -> stream -> record -> environ: no cycle for the GC
        if self.disconnected:
            return
        if self.queue and self.queue[0] is ex:
            del self.queue[0]
        if type(ex.body) is StreamingBody and not ex.received:
            keep_alive = False  # the rest of the body must never be read as a request
        if abort or not keep_alive or self.closing:
            self.close()
            return
        if self.queue:
            ex = self.queue[0]
            self._begin(ex)
            if ex.received:
                self._start(ex)
            elif ex.body is not None:
                ex.body.restart_clock()  # its turn: the wait behind the others is not its fault
                self._set_body_timer(ex.body)
        elif self.pending_error is not None:
            self._send_error(self.pending_error)
            return
        elif self.draining:  # the head promised keep-alive: the client may reuse it now
            self._drain_idle()
        else:
            self._idle = True
            self._set_timer(self.config.keepalive_timeout, self._on_keepalive_timeout, "keepalive")
        if self.reading_paused and len(self.queue) <= 1:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def _protocol_error(self, exc: ProtocolError) -> None:
        log.info("bad request from %s: %d %s", self.remote and self.remote[0], exc.status, exc.reason)
        ex = self.receiving
        if ex is not None and not ex.received and ex.runner is not None:
            self._input_failed(ex, exc.status, exc.reason)  # the app is reading it: tell it
            return
        if ex is not None and not ex.received:
            self.queue.remove(ex)  # half a request is never given to the app
            self.receiving = None
        if self.queue:
            self.pending_error = exc  # answered after the requests ahead of it
            if not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
        else:
            self._send_error(exc)

    def _send_error(self, exc: ProtocolError) -> None:
        self.pending_error = exc
        if self.server.metrics is not None:
            self.server.metrics.rejected(exc.status)
        self.transport.write(error_response(exc.status, exc.reason, False, self.server.server_header))  # type: ignore[union-attr]
        self.close()

    def write(self, data: bytes) -> None:
        if not self.disconnected:
            self.server.bytes_out += len(data)
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close after what is buffered has been sent."""
        self.closing = True
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """Graceful stop: never drop a request the client has sent.

        An idle keep-alive connection is closed after ``drain_grace`` seconds
        of quiet (a request that arrives meanwhile is answered with
        ``Connection: close``); so is one whose response, started with
        keep-alive, ends during the stop. A new connection that has not
        delivered its first request yet, or a request partly received, is
        answered: the head and body timers bound the wait, the graceful
        timeout the rest.
        """
        self.draining = True
        for ex in self.queue:  # a head not sent yet says Connection: close
            if ex.framer is None:
                ex.keep_alive = False  # a step framing the head now reads either value: both are fine
        between_requests = self.requests > 0 and (self.parser is None or self.parser.idle)
        if not self.queue and between_requests:
            self._drain_idle()

    def _drain_idle(self) -> None:
        """An idle keep-alive connection on a graceful stop: close it after a quiet grace.

        A pooling proxy may be sending a request on it right now; closing at once
        loses that request (nginx never retries a POST it has sent). During the
        grace whatever arrives is answered with ``Connection: close``.
        """
        grace = self.config.drain_grace
        if grace > 0 and not self.closing:
            self._idle = True
            self._set_timer(grace, self._on_keepalive_timeout, "keepalive")
        else:
            self.close()

    # -- timers -----------------------------------------------------------------

    def _set_timer(self, delay: float | None, callback: Callable[[], None], kind: str = "header") -> None:
        if not delay:
            self._deadline = 0.0
            return
        self._timer_kind = kind
        self._on_timeout = callback
        self._deadline = self.loop.time() + delay

    def _set_body_timer(self, body: Any) -> None:  # a BodyBuffer or a StreamingBody
        config = self.config
        self._set_timer(body_time_left(body, config.body_timeout, config.body_min_rate), self._on_body_timeout)

    def _cancel_timer(self) -> None:
        self._deadline = 0.0

    def check_timer(self, now: float) -> None:
        """Called by the server's sweep: fire the connection's timeout if it is due."""
        deadline = self._deadline
        if deadline and now >= deadline and not self.disconnected:
            self._deadline = 0.0
            callback = self._on_timeout
            if callback is not None:
                callback()

    def _on_keepalive_timeout(self) -> None:
        if self._idle:
            self.close()

    def _on_header_timeout(self) -> None:
        if self._idle and not self.closing:
            log.info("request head timeout from %s", self.remote and self.remote[0])
            self._send_error(ProtocolError(408, "request head not received in time"))

    def _on_body_timeout(self) -> None:
        ex = self.receiving
        if ex is not None and not ex.received and ex.runner is not None and type(ex.body) is StreamingBody:
            if ex.body.paused:  # the server is the one not reading: not the client's fault
                self._set_timer(self.config.body_timeout, self._on_body_timeout)
                return
            log.info("request body timeout from %s", self.remote and self.remote[0])
            self._input_failed(ex, 408, "request body not received in time")
            return
        if ex is not None and not ex.received and ex.runner is None:
            log.info("request body timeout from %s", self.remote and self.remote[0])
            self.queue.remove(ex)
            self.receiving = None
            if self.queue:
                self.pending_error = ProtocolError(408, "request body not received in time")
            else:
                self._send_error(ProtocolError(408, "request body not received in time"))


class _TakenOver:
    """Marks a connection whose transport an app's own protocol took (``wsgiplus.takeover``)."""

    __slots__ = ()

    def app_finished(self, error: bool) -> None:
        pass  # the app's iterable ended; the connection is the protocol's business


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(config.certfile, config.keyfile, config.keyfile_password)
    ctx.set_alpn_protocols(["h2", "http/1.1"] if config.http2 else ["http/1.1"])
    return ctx


def _proxy_fixer(config: Config) -> Callable[[dict[str, Any]], None] | None:
    if not config.proxy_headers:
        return None
    from .proxy import make_proxy_fixer

    return make_proxy_fixer(config)


def _access_logger(config: Config) -> Any:
    from ..shell.accesslog import AccessLogger

    return AccessLogger.from_config(config)


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (and asked for or ``auto``), else asyncio's own."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    if sys.platform != "win32":
        from .fdlimit import SelectorLoop  # backs off on EMFILE instead of spinning

        return SelectorLoop()
    return asyncio.new_event_loop()


# Loop iterations between accepting a socket and the protocol's connection_made (asyncio: 2,
# uvloop: 1), with one to spare.
_ACCEPT_HOPS = 3


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed by pure-Python classes
class Server:
    """Serves one WSGI app on a set of listening sockets from one event loop."""

    def __init__(self, app: Callable[..., Any], config: Config | None = None, *, max_requests: int = 0,
                 on_max_requests: Callable[[], None] | None = None) -> None:
        self.app = app
        self.config = config or Config()
        # a worker asks to be recycled: on_max_requests() is called once, on the loop thread,
        # when max_requests exchanges have finished (counted here, not in a subclass: the
        # worker's server is a plain Server, so the compiled build's calls stay native)
        self.max_requests = max_requests
        self.on_max_requests = on_max_requests
        self.requests_done = 0
        self.limits = self.config.limits
        self.budget = MemoryBudget(self.config.max_buffered_size)  # request heads and bodies
        self.server_header = b"wsgiplus" if self.config.server_header else None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.pool: Any = None  # the ThreadPool, made when the server starts (a fake in unit tests)
        self.connections: set[Connection] = set()  # every protocol's
        self.active = 0  # requests handed to the app and not finished
        self.sockets: list[socket.socket] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._factories: list[tuple[socket.socket, Callable[[], HTTPConnection], Any]] = []
        self.stopping = False  # a graceful stop has begun (readiness turns false)
        self.bytes_in = 0  # received from clients, for metrics
        self.bytes_out = 0  # sent to clients (responses; not 100 Continue or error pages)
        self.metrics: Any = None  # a metrics.RequestStats, when metrics or statsd are on
        self._stopping: asyncio.Event | None = None
        self._unix_paths: list[tuple[str, tuple[int, int] | None]] = []
        self._idle_waiter: asyncio.Future | None = None
        self.started = False
        self.suspensions = Suspensions(self.config.max_suspended, self.config.suspend_timeout)
        # an accepted WebSocket waiting for a message is not a suspended request
        self.websocket_suspensions = Suspensions()
        self.websockets = 0  # open WebSockets (max_websockets)
        # an app marked by wsgiplus.streaming.streaming_input: True or when(environ)
        self.stream_input = getattr(app, "wsgiplus_streaming_input", None)
        self.proxy_fixer = _proxy_fixer(self.config)
        self.access_logger = _access_logger(self.config)  # an AccessLogger, or None
        self.access_log: Callable[[ExchangeRecord, Connection], None] | None = (
            self.access_logger.log if self.access_logger is not None else None)
        self._watchdog: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = 1.0
        self._spare_parsers: list[RequestParser] = []
        self._warned: set[tuple[int, float]] = set()
        self._uvloop = False
        self.hurry = False  # stop_now() was called: no graceful wait

    @property
    def addresses(self) -> list[str]:
        """The bind strings actually served (port 0 resolved)."""
        return [describe(s) for s in self.sockets]

    def make_sockets(self) -> list[socket.socket]:
        socks = [socket_from_fd(fd) for fd in self.config.fds]
        socks += [bind_socket(b, self.config.backlog) for b in self.config.bind]
        return socks

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening (on ``sockets`` if given, else on the configured binds)."""
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        config = self.config
        self.pool = ThreadPool(config.threads, affinity=config.thread_affinity)
        if sockets is None:  # ours to make, so ours to unlink at the end
            sockets = self.make_sockets()
            self._unix_paths = [unix_socket_file(s) for s in sockets if s.family == socket.AF_UNIX]
        self.sockets = sockets
        multiprocess = config.workers > 1
        tls = _ssl_context(config)
        for sock in self.sockets:
            template = self._template(sock, multiprocess, tls is not None)

            def factory(template: dict[str, Any] = template) -> HTTPConnection:
                return HTTPConnection(self, template)

            if sock.family == socket.AF_UNIX:
                srv = await self.loop.create_unix_server(factory, sock=sock, backlog=config.backlog, ssl=tls)
            else:
                srv = await self.loop.create_server(factory, sock=sock, backlog=config.backlog, ssl=tls)
            self._servers.append(srv)
            self._factories.append((sock, factory, tls))
        self.started = True
        if config.blocking_warn:
            self._watchdog = self.loop.call_later(min(1.0, config.blocking_warn / 2), self._watch_pool)
        timeouts = [t for t in (config.keepalive_timeout, config.header_timeout, config.body_timeout,
                                config.drain_grace) if t]
        self._sweep_every = min([1.0] + [max(0.05, t / 4) for t in timeouts])
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        self._uvloop = type(self.loop).__module__.startswith("uvloop")
        for addr in self.addresses:
            log.info("WSGI+ listening on %s (%d threads, pid %d)", addr, config.threads, os.getpid())

    def _template(self, sock: socket.socket, multiprocess: bool, tls: bool) -> dict[str, Any]:
        name = sock.getsockname()
        if isinstance(name, tuple):
            host, port = str(name[0]), str(name[1])
        else:
            host, port = "localhost", ""
        scheme = "https" if tls else self.config.url_scheme
        return environ_template(host, port, scheme, self.config.root_path, multiprocess)

    def take_parser(self) -> RequestParser:
        """A parser at the start of a message: a spare one, else a new one."""
        spare = self._spare_parsers
        return spare.pop() if spare else RequestParser(self.limits, self.budget)

    def give_parser(self, parser: RequestParser) -> None:
        """Keep an idle parser for the next request, if it can parse another message."""
        if parser.reusable and len(self._spare_parsers) < 256:
            self._spare_parsers.append(parser)

    def connection_made(self, conn: Connection) -> bool:
        """A connection opened (any protocol); False when ``max_connections`` is exceeded
        (it is still counted until it closes, and refuses in its own protocol's way)."""
        connections = self.connections
        connections.add(conn)
        limit = self.config.max_connections
        if limit is not None and len(connections) > limit:
            log.warning("%d connections open (max_connections): refusing one", limit)
            return False
        return True

    def connection_lost(self, conn: Connection) -> None:
        """A connection closed (any protocol)."""
        self.connections.discard(conn)
        self.connection_closed(conn)

    def access(self, conn: Connection, record: ExchangeRecord) -> None:
        """Called once per finished exchange, on the loop: the access log line, the metrics,
        the count toward ``max_requests``."""
        self.requests_done += 1
        if self.access_log is not None:
            self.access_log(record, conn)
        if self.metrics is not None:
            self.metrics.observe(record)
        if self.requests_done == self.max_requests and self.on_max_requests is not None:
            log.info("worker %d: served %d requests (max_requests); asking for a replacement",
                     os.getpid(), self.requests_done)
            self.on_max_requests()

    def flush_access_log(self) -> None:
        """Write the access lines batched so far (the logger batches per loop iteration)."""
        if self.access_logger is not None:
            self.access_logger.flush()

    def _sweep(self) -> None:
        """Fire due connection timeouts (keep-alive, head, body): one timer for all."""
        now = self.loop.time()
        for conn in tuple(self.connections):
            conn.check_timer(now)
        if self._uvloop:  # libuv closes clients at the fd limit silently: say so
            fd_probe(f"new connections are closed at once by uvloop; {len(self.connections)} open")
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _watch_pool(self) -> None:
        """Warn, with its stack, about an app step that has held a thread too long.

        A thread cannot be killed; the operator must still be told, as gunicorn's
        WORKER TIMEOUT tells, and once per step is enough.
        """
        threshold = self.config.blocking_warn or 0.0
        frames = sys._current_frames()
        now = time.monotonic()
        for thread, held in self.pool.long_running(threshold):
            key = (thread.ident or 0, round(now - held, 1))
            if key in self._warned:
                continue
            self._warned.add(key)
            frame = frames.get(thread.ident or 0)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
            log.warning("app step has held thread %s for %.1fs (blocking_warn %ss):\n%s",
                        thread.name, held, threshold, stack)
        if len(self._warned) > 1000:
            self._warned.clear()
        self._watchdog = self.loop.call_later(min(1.0, threshold / 2), self._watch_pool)

    def connection_closed(self, conn: Connection) -> None:
        if self._idle_waiter is not None and not self.connections and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def request_stop(self) -> None:
        """Ask the server to stop gracefully; safe from any thread or a signal handler."""
        if self.loop is None or self._stopping is None:
            return
        try:
            self.loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:  # the loop is closed: the server has stopped already
            pass

    def stop_now(self) -> None:
        """Stop without waiting: cut every connection (a second Ctrl-C). Loop thread only."""
        self.hurry = True
        if self._stopping is not None:
            self._stopping.set()
        for conn in list(self.connections):
            conn.abort()

    async def wait_stopped(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests (suspended ones too) finish, then close."""
        timeout = self.config.graceful_timeout if timeout is None else timeout
        self.stopping = True
        queued = self._take_accept_queue()
        if self.hurry:
            timeout = 0.0
        deadline = self.loop.time() + timeout
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            conn.shutdown()
        if queued:
            await self._adopt(queued, timeout)
        while True:
            if not self.connections:
                # A connection the loop accepted just before the listeners closed reaches
                # connection_made a few callbacks later (asyncio: accept, then a task, then
                # call_soon): let it arrive - it gets shutdown() there - rather than exit
                # under it (the client would see the connection closed without a response).
                for _ in range(_ACCEPT_HOPS):
                    await asyncio.sleep(0)
                if not self.connections:
                    break
            self._idle_waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle_waiter),
                                       max(0.0, deadline - self.loop.time()))
            except asyncio.TimeoutError:
                log.warning("graceful timeout: aborting %d connection(s)", len(self.connections))
                for conn in list(self.connections):
                    conn.abort()
                await asyncio.sleep(0)
                break
        for handle in (self._watchdog, self._sweeper):
            if handle is not None:
                handle.cancel()
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1)
            except asyncio.TimeoutError:
                pass
        # let iterables closed because of the abort finish their close() on the pool
        await self.loop.run_in_executor(None, self.pool.shutdown, 5.0)
        self.flush_access_log()
        for path, identity in self._unix_paths:
            try:
                unlink_unix_socket(path, identity)
            except OSError:
                pass

    def _take_accept_queue(self) -> list[tuple[socket.socket, Callable[[], HTTPConnection], Any]]:
        """Accept what waits in the listen queues now, before closing them.

        Closing a listening socket resets the connections the kernel has queued
        on it; a proxy that has already sent a request on one cannot retry it.
        Taking them first leaves a window of microseconds, not the whole drain.
        """
        taken = []
        for sock, factory, tls in self._factories:
            for _ in range(max(1, self.config.backlog)):
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                conn.setblocking(False)
                taken.append((conn, factory, tls))
        return taken

    async def _adopt(self, queued: list[tuple[socket.socket, Callable[[], HTTPConnection], Any]],
                     timeout: float) -> None:
        """Serve the connections ``_take_accept_queue`` took (a quick stop just closes them)."""
        if timeout <= 0:
            for sock, _, _ in queued:
                sock.close()
            return
        handshake = min(timeout, self.config.header_timeout or timeout)
        tasks = []
        for sock, factory, tls in queued:
            extra = {"ssl": tls, "ssl_handshake_timeout": handshake} if tls is not None else {}
            tasks.append(self.loop.create_task(self.loop.connect_accepted_socket(factory, sock, **extra)))
        done, pending = await asyncio.wait(tasks, timeout=handshake + 1)
        for task in pending:
            task.cancel()
        for (sock, _, _), task in zip(queued, tasks, strict=True):
            if task in pending or task.cancelled() or task.exception() is not None:
                if task in done and not task.cancelled():
                    log.info("a connection accepted while stopping failed: %s", task.exception())
                sock.close()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, serve until ``request_stop()`` (or SIGTERM/SIGINT), then shut down."""
        await self.start(sockets)
        self._install_signals()
        await self.wait_stopped()
        log.info("shutting down (graceful timeout %ss)", self.config.graceful_timeout)
        await self.shutdown()

    def _install_signals(self) -> None:
        if sys.platform == "win32":
            return
        def on_signal() -> None:  # the first: graceful; a second one: stop now
            if self._stopping is not None and self._stopping.is_set():
                self.stop_now()
            else:
                self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.loop.add_signal_handler(sig, on_signal)
            except (RuntimeError, ValueError):  # not the main thread
                return

    def run(self) -> None:
        """Run in this thread until stopped."""
        loop = new_event_loop(self.config.loop)
        try:
            loop.run_until_complete(self.serve())
        finally:
            self.flush_access_log()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
