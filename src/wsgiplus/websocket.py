"""WebSockets that hold no thread: the app's objects and the loop's connection.

``environ["wsgiplus.websocket"]`` is a ``WebSocketRequest`` when the request is a
valid WebSocket upgrade (else it is absent and the request is plain HTTP).
``accept()`` answers ``101`` and returns a ``WebSocket`` whose ``receive()``,
``send()`` and ``close()`` return futures the app yields: a socket waiting for
its next message holds no thread, like any suspended request.

    def app(environ, start_response):
        upgrade = environ.get("wsgiplus.websocket")
        if upgrade is None:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"a WebSocket lives here"]
        return echo(upgrade.accept())

    def echo(ws):
        while True:
            fut = ws.receive()
            yield fut
            message = fut.result()  # str, bytes, or None once closed
            if message is None:
                return
            yield ws.send(message)

Threads: the app calls these methods on pool threads (or any thread); each
posts to the event loop, which alone touches the protocol state and the
transport (``WebSocketConnection``). Futures are resolved on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from .protocols.ws import (
    GOING_AWAY,
    INTERNAL_ERROR,
    NORMAL,
    Closed,
    Handshake,
    Message,
    Pong,
    WebSocketProtocol,
    handshake_from_environ,
)
from .runner.futures import Future
from .server.connection import Connection

log = logging.getLogger("wsgiplus.error")

__all__ = ["ConnectionClosed", "WebSocket", "WebSocketConnection", "WebSocketRequest"]

CLOSE_TIMEOUT = 5.0  # for the peer's answer to our close frame
_PING_PAYLOAD = b"wsgiplus"


class ConnectionClosed(ConnectionError):
    """A send on a WebSocket that is closing or closed."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code} {reason})".rstrip())
        self.code = code
        self.reason = reason


class WebSocketRequest:
    """``environ["wsgiplus.websocket"]``: the client asked to upgrade; ``accept()`` to do it.

    ``subprotocols`` and ``extensions`` are what the client offered. An app
    that never calls ``accept()`` answers the request as plain HTTP.
    """

    __slots__ = ("handshake", "subprotocols", "extensions", "_upgrade", "_options", "accepted")

    def __init__(self, handshake: Handshake,
                 upgrade: Callable[[bytes, WebSocketProtocol, WebSocket], None] | None,
                 options: dict[str, Any]) -> None:
        self.handshake = handshake
        self.subprotocols = handshake.subprotocols
        self.extensions = handshake.extensions
        self._upgrade = upgrade
        self._options = options
        self.accepted = False

    def accept(self, subprotocol: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> WebSocket:
        """Answer ``101 Switching Protocols`` and return the socket.

        ``subprotocol`` must be one of ``subprotocols`` (``ValueError`` otherwise);
        ``headers`` are extra response fields. After ``accept()`` the app sends
        no HTTP response: it must not call ``start_response`` or yield bytes.
        """
        if self.accepted:
            raise RuntimeError("accept() called twice")
        head, proto = self.handshake.accept(subprotocol, headers, **self._options)
        self.accepted = True
        if self._upgrade is None:
            raise RuntimeError("this server cannot upgrade the connection")
        ws = WebSocket(proto)
        upgrade, self._upgrade = self._upgrade, None  # (it holds the runner)
        upgrade(head, proto, ws)
        return ws


def websocket_request(environ: dict[str, Any], server: Any) -> WebSocketRequest | None:
    """Put ``wsgiplus.websocket`` in the environ when the request is a valid upgrade."""
    handshake = handshake_from_environ(environ)
    if handshake is None:
        return None
    config = server.config
    request = WebSocketRequest(handshake, None, {
        "deflate": config.ws_per_message_deflate,
        "max_message_size": config.ws_max_message_size,
        "server_header": server.server_header,
    })
    environ["wsgiplus.websocket"] = request
    return request


class WebSocket:
    """The app's side of an accepted WebSocket. Every method is safe from any thread.

    ``receive()`` -> future of the next message: ``str`` (text), ``bytes``
    (binary), or ``None`` once the socket is closed (then ``close_code`` and
    ``close_reason`` say why; 1006: the connection was lost).
    ``send(message)`` -> future done when the message is handed to the
    transport and its buffer is below the high-water mark (yield it to apply
    backpressure; it fails with ``ConnectionClosed`` if the socket is closing).
    ``close(code, reason)`` -> future done when the socket is closed.
    """

    __slots__ = ("subprotocol", "extensions", "close_code", "close_reason", "_conn", "_loop",
                 "__weakref__")

    def __init__(self, proto: WebSocketProtocol) -> None:
        self.subprotocol: str | None = proto.subprotocol
        self.extensions: list[str] = proto.extensions
        self.close_code: int | None = None
        self.close_reason = ""
        self._conn: Any = None  # the loop's WebSocketConnection, set by the server
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def receive(self) -> Future[str | bytes | None]:
        fut: Future[str | bytes | None] = Future()
        self._post(fut, "_receive", fut)
        return fut

    def send(self, message: str | bytes | bytearray | memoryview) -> Future[None]:
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        if not isinstance(message, (str, bytes)):
            message = bytes(message)
        fut: Future[None] = Future()
        conn = self._conn
        if conn is not None and self.close_code is None and conn.reserve(len(message)):
            # the socket's buffer is below its mark and little is on its way to it:
            # done now, so the app goes on without a hop; the write is posted behind it
            fut.set_result(None)
            self._post(fut, "_send", message, None)
        else:
            self._post(fut, "_send", message, fut)
        return fut

    def close(self, code: int = NORMAL, reason: str = "") -> Future[None]:
        if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
            raise ValueError(f"close code {code} may not be sent")
        fut: Future[None] = Future()
        self._post(fut, "_close", code, reason, fut)
        return fut

    def _post(self, fut: Future[Any], method: str, *args: Any) -> None:
        conn, loop = self._conn, self._loop
        if conn is None or loop is None:
            raise RuntimeError("the WebSocket is not connected to a server")
        fn = getattr(conn, method)
        if conn.loop_thread == threading.get_ident():
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server has stopped
            if fut.done():
                return
            if method == "_send":
                fut.set_exception(ConnectionClosed(self.close_code or 1006))
            else:
                fut.set_result(None)

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {state}>"


def _resolve(fut: Future[Any], value: Any) -> None:
    if fut.set_running_or_notify_cancel():
        fut.set_result(value)


def _fail(fut: Future[Any], exc: BaseException) -> None:
    if fut.set_running_or_notify_cancel():
        fut.set_exception(exc)


class WebSocketConnection(Connection, asyncio.Protocol):
    """One accepted WebSocket on the loop: owns its protocol state and transport.

    The server hands the transport over with ``start()`` (``transport.set_protocol``),
    including the bytes that arrived after the request head. ``on_end(self)``
    is called once when the socket is closed *and* the app has finished (for
    the access log and the server's counts). Timers are checked by the
    server's sweep (``check_timer``), so an idle socket holds no timer handle.
    """

    protocol_name: ClassVar[str] = "WebSocket"

    __slots__ = (
        "exchange",
        "proto",
        "ws",
        "loop_thread",
        "write_paused",
        "reading_paused",
        "app_done",
        "ended",
        "started_at",
        "_inbox",
        "_inbox_bytes",
        "_inbox_high",
        "_waiters",
        "_send_waiters",
        "_close_waiters",
        "_send_limit",
        "_last_in",
        "_last_message",
        "_ping_at",
        "_close_deadline",
        "_ping_interval",
        "_ping_timeout",
        "_idle_timeout",
        "_deadline",
        "on_end",
        "on_lost",
        "counted",
        "runner",
        "_posted",
        "_posted_lock",
        "_high",
    )

    def __init__(
        self,
        proto: WebSocketProtocol,
        ws: WebSocket,
        loop: asyncio.AbstractEventLoop,
        *,
        write_buffer_high: int = 256 * 1024,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        idle_timeout: float | None = None,
        timeout: float | None = None,
        on_end: Callable[[WebSocketConnection], None] | None = None,
        on_lost: Callable[[WebSocketConnection], None] | None = None,
    ) -> None:
        self.requests = 1
        self.closing = False
        self.draining = False
        self.exchange: Any = None  # the HTTP exchange whose record gets the access line
        self.proto = proto
        self.ws = ws
        self.loop = loop
        self.loop_thread: int | None = None  # known once start() runs on the loop
        self.transport: asyncio.Transport | None = None
        self.remote: tuple[str, int] | None = None
        self.write_paused = False
        self.reading_paused = False
        self.disconnected = False
        self.app_done = False
        self.ended = False
        now = loop.time()
        self.started_at = now
        self._inbox: deque[str | bytes] | None = None
        self._inbox_bytes = 0
        self._inbox_high = write_buffer_high
        self._waiters: list[Future[Any]] | None = None  # a list: a deque is ~600 bytes
        self._send_waiters: list[Future[Any]] | None = None
        self._close_waiters: list[Future[Any]] | None = None
        # an app that sends without yielding the futures is cut off past this
        self._send_limit = max(16 * write_buffer_high, 2 * proto.max_message_size)
        self._last_in = now
        self._last_message = now
        self._ping_at = 0.0  # when our unanswered ping was sent; 0.0: none out
        self._close_deadline = 0.0
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._idle_timeout = idle_timeout
        self._deadline = now + timeout if timeout else 0.0
        self.on_end = on_end
        self.on_lost = on_lost
        self.counted = False  # in the server's count of open WebSockets
        self.runner: Any = None  # the request's runner (for the server's callbacks)
        # bytes of sends resolved at once and not yet written by the loop (send()'s fast path)
        self._posted = 0
        self._posted_lock = threading.Lock()
        self._high = write_buffer_high
        ws._conn = self
        ws._loop = loop

    # -- the hand-over -------------------------------------------------------

    def start(self, transport: asyncio.Transport, head: bytes, trailing: bytes = b"") -> None:
        """Take ``transport`` over: send the 101 ``head``, then speak WebSocket."""
        self.loop_thread = threading.get_ident()
        self.transport = transport
        transport.set_protocol(self)
        transport.write(head)
        if trailing:
            self.data_received(trailing)
        try:
            transport.resume_reading()
        except (AttributeError, RuntimeError):
            pass

    def refuse(self, transport: asyncio.Transport, response: bytes) -> None:
        """Over the socket limit: answer ``response`` (a 503) instead of the 101."""
        self.loop_thread = threading.get_ident()
        self.transport = transport
        transport.set_protocol(self)
        transport.write(response)
        self.proto.closed = True
        self.proto.close_code, self.proto.close_reason = 1013, "too many WebSockets"
        self._on_closed()

    # -- transport callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        if proto.closed:
            return
        self._last_in = self.loop.time()
        self._ping_at = 0.0  # any bytes prove the peer alive
        events = proto.receive_data(data)
        for event in events:
            kind = type(event)
            if kind is Message:
                self._deliver(event.data)  # type: ignore[union-attr]
            elif kind is Closed:
                self._on_closed()
            elif kind is Pong:
                self._ping_at = 0.0
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed WebSocket is a lost one

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        if not self.proto.closed:
            self.proto.receive_data(None)
            self._on_closed()
        self._fail_sends()
        self._resolve_waiters()
        if self.on_lost is not None:
            self.on_lost(self)
        self._maybe_end()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self._send_waiters = self._send_waiters, None
        for fut in waiters or ():
            _resolve(fut, None)

    # -- the app's requests (loop thread) ------------------------------------

    def _receive(self, fut: Future[Any]) -> None:
        inbox = self._inbox
        if inbox:
            data = inbox.popleft()
            self._inbox_bytes -= len(data)
            if self.reading_paused and self._inbox_bytes <= self._inbox_high // 4:
                self.reading_paused = False
                if self.transport is not None:
                    self.transport.resume_reading()
            _resolve(fut, data)
        elif self.proto.closed:
            _resolve(fut, None)
        else:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)

    def reserve(self, size: int) -> bool:
        """Any thread: may a send of ``size`` bytes be done at once? (not paused, and what
        is already on its way to the transport stays under the high-water mark)"""
        if self.write_paused:
            return False
        with self._posted_lock:
            if self._posted + size > self._high and self._posted:
                return False
            self._posted += size
            return True

    def _send(self, data: str | bytes, fut: Future[Any] | None) -> None:
        """``fut`` is None when ``send()`` already resolved it (``reserve()`` said yes)."""
        if fut is None:
            with self._posted_lock:
                self._posted -= len(data)
        proto = self.proto
        if not proto.open or self.disconnected:
            if fut is not None:
                _fail(fut, ConnectionClosed(proto.close_code, proto.close_reason))
            return
        proto.send(data)
        self._last_message = self.loop.time()
        self._flush()
        if not self.write_paused or fut is None:
            if fut is not None:
                _resolve(fut, None)
            else:
                self._check_send_limit()
            return
        if self._send_waiters is None:
            self._send_waiters = []
        self._send_waiters.append(fut)
        self._check_send_limit()

    def _check_send_limit(self) -> None:
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > self._send_limit:
            log.warning("WebSocket from %s: %d bytes unsent (the client does not read and the app "
                        "does not wait on send()): closing", self.remote and self.remote[0],
                        transport.get_write_buffer_size())
            transport.abort()

    def _close(self, code: int, reason: str, fut: Future[Any]) -> None:
        if self.proto.closed or self.disconnected:
            _resolve(fut, None)
            return
        if self._close_waiters is None:
            self._close_waiters = []
        self._close_waiters.append(fut)
        self.start_close(code, reason)

    # -- server side ---------------------------------------------------------

    def start_close(self, code: int, reason: str = "") -> None:
        """Send a close frame; the peer has ``CLOSE_TIMEOUT`` to answer before the cut."""
        proto = self.proto
        if proto.closed or not proto.open:
            return
        proto.close(code, reason)
        self._flush()
        self._close_deadline = self.loop.time() + CLOSE_TIMEOUT
        if proto.closed:
            self._on_closed()

    def app_finished(self, error: bool) -> None:
        """The app's iterable has ended (``error``: it raised): close the socket if it is open."""
        self.app_done = True
        if self.proto.open and not self.disconnected:
            self.start_close(INTERNAL_ERROR if error else NORMAL, "app error" if error else "")
        self._maybe_end()

    def shutdown(self) -> None:
        """Graceful stop: 1001 to the client; the app sees ``None`` once it has answered."""
        self.draining = True
        self.start_close(GOING_AWAY, "server shutting down")

    def close(self) -> None:
        """Close now with 1001 (the peer's answer is waited for, up to ``CLOSE_TIMEOUT``)."""
        self.closing = True
        self.start_close(GOING_AWAY, "")

    @property
    def busy(self) -> bool:
        return not self.disconnected

    def check_timer(self, now: float) -> None:
        """Called by the server's sweep: close handshake, ping, idle and lifetime deadlines."""
        if self.disconnected:
            return
        transport = self.transport
        if self._close_deadline:
            if now >= self._close_deadline and transport is not None:
                transport.abort()  # the peer did not answer our close in time
            return
        proto = self.proto
        if proto.closed:
            return
        if self._deadline and now >= self._deadline:
            log.info("WebSocket from %s: ws_timeout passed, closing", self.remote and self.remote[0])
            self.start_close(GOING_AWAY, "timeout")
            return
        idle = self._idle_timeout
        if idle and now - max(self._last_message, self._last_in) >= idle:
            self.start_close(GOING_AWAY, "idle timeout")
            return
        if self._ping_at:
            timeout = self._ping_timeout
            if timeout and now - self._ping_at >= timeout:
                log.info("WebSocket from %s: no pong in %.3gs, closing",
                         self.remote and self.remote[0], timeout)
                self.start_close(INTERNAL_ERROR, "keepalive ping timeout")
            return
        interval = self._ping_interval
        if interval and now - self._last_in >= interval:
            proto.ping(_PING_PAYLOAD)
            self._ping_at = now
            self._flush()

    # -- internals -----------------------------------------------------------

    def _deliver(self, data: str | bytes) -> None:
        self._last_message = self.loop.time()
        waiters = self._waiters
        while waiters:
            fut = waiters.pop(0)
            if fut.set_running_or_notify_cancel():
                fut.set_result(data)
                return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(data)
        self._inbox_bytes += len(data)
        if self._inbox_bytes > self._inbox_high and not self.reading_paused:
            # the app is not receiving: stop reading, TCP pushes back on the client
            self.reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _flush(self) -> None:
        data = self.proto.data_to_send()
        if data and self.transport is not None and not self.disconnected:
            self.transport.write(data)

    def _on_closed(self) -> None:
        proto = self.proto
        self.ws.close_reason = proto.close_reason
        self.ws.close_code = proto.close_code if proto.close_code is not None else 1006
        self._flush()
        self._resolve_waiters()
        self._fail_sends()
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.transport is not None and not self.disconnected:
            self.transport.close()  # the server closes the TCP connection first (RFC 6455 §7.1.1)
        self._close_deadline = self.loop.time() + CLOSE_TIMEOUT

    def _resolve_waiters(self) -> None:
        waiters, self._waiters = self._waiters, None
        inbox = self._inbox
        for fut in waiters or ():
            # messages that arrived before the close are still delivered first
            if inbox:
                data = inbox.popleft()
                self._inbox_bytes -= len(data)
                _resolve(fut, data)
            else:
                _resolve(fut, None)
        closers, self._close_waiters = self._close_waiters, None
        for fut in closers or ():
            _resolve(fut, None)

    def _fail_sends(self) -> None:
        waiters, self._send_waiters = self._send_waiters, None
        for fut in waiters or ():
            _fail(fut, ConnectionClosed(self.ws.close_code, self.ws.close_reason))

    def _maybe_end(self) -> None:
        if self.app_done and self.disconnected and not self.ended:
            self.ended = True
            if self.on_end is not None:
                self.on_end(self)

    @property
    def duration(self) -> float:
        return self.loop.time() - self.started_at
