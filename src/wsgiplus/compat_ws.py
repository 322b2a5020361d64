"""The same WebSocket app on other WSGI servers: a blocking socket from the raw one.

    from wsgiplus.compat_ws import portable_websocket

    @portable_websocket
    def app(environ, start_response):
        upgrade = environ.get("wsgiplus.websocket")
        ...

Under WSGI+ the decorator steps aside: ``environ["wsgiplus.websocket"]`` is
the server's and sockets hold no thread. Elsewhere, when the server exposes
the connection's socket (``gunicorn.socket`` under gunicorn's sync and gthread
workers, ``werkzeug.socket`` under werkzeug's dev server), it puts a
``WebSocketRequest`` of its own in the environ with the same ``accept()`` and
the same ``WebSocket`` methods; the handshake and the frames are done with
``wsproto`` on the raw socket. Each future it returns is already done (the
call blocked until it was), so ``yield fut`` / ``fut.result()`` code runs
unchanged, one thread per socket, as Flask-Sock does there. The app's body
is waited for like ``wsgiplus.compat.portable`` does (which this applies).

After the socket ends the wrapper tells the server to send nothing and drop
the connection, by each server's convention: ``StopIteration`` from the app
call under gunicorn, ``ConnectionError`` under werkzeug. There are no pings
or timeouts on this path, and ``max_websockets`` is the server's thread count.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .compat import WrappedBody, is_wsgiplus, portable
from .protocols.ws import INTERNAL_ERROR, NORMAL, Closed, Handshake, Message, handshake_from_environ
from .runner.futures import Future
from .websocket import ConnectionClosed

__all__ = ["BlockingWebSocket", "BlockingWebSocketRequest", "portable_websocket"]

CLOSE_TIMEOUT = 5.0


def _done(value: Any = None, exc: BaseException | None = None) -> Future[Any]:
    fut: Future[Any] = Future()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
    return fut


class BlockingWebSocketRequest:
    """``environ["wsgiplus.websocket"]`` on a plain server with a raw socket."""

    def __init__(self, handshake: Handshake, sock: socket.socket,
                 max_message_size: int = 16 * 1024 * 1024, deflate: bool = True) -> None:
        self.handshake = handshake
        self.subprotocols = handshake.subprotocols
        self.extensions = handshake.extensions
        self._sock = sock
        self._options = {"max_message_size": max_message_size, "deflate": deflate,
                         "server_header": None}
        self.accepted = False
        self.websocket: BlockingWebSocket | None = None

    def accept(self, subprotocol: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> BlockingWebSocket:
        if self.accepted:
            raise RuntimeError("accept() called twice")
        head, proto = self.handshake.accept(subprotocol, headers, **self._options)
        self._sock.settimeout(None)
        self._sock.sendall(head)
        self.accepted = True
        self.websocket = BlockingWebSocket(self._sock, proto)
        return self.websocket


class BlockingWebSocket:
    """``WebSocket`` with blocking calls: each returns a future that is already done.

    ``send()`` may be called from other threads (a broadcast) while the owner
    waits in ``receive()``; a lock keeps the protocol state consistent.
    """

    def __init__(self, sock: socket.socket, proto: Any) -> None:
        self._sock = sock
        self._proto = proto
        self._lock = threading.Lock()
        self._inbox: deque[str | bytes] = deque()
        self.subprotocol = proto.subprotocol
        self.extensions = proto.extensions
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def _flush_locked(self) -> None:
        data = self._proto.data_to_send()
        if data:
            try:
                self._sock.sendall(data)
            except OSError:
                self._events_locked(self._proto.receive_data(None))

    def _events_locked(self, events: list[Any]) -> None:
        for event in events:
            if type(event) is Message:
                self._inbox.append(event.data)
            elif type(event) is Closed:
                self.close_code, self.close_reason = event.code, event.reason

    def _read_once(self) -> None:
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            data = None
        except OSError:
            data = None
        with self._lock:
            self._events_locked(self._proto.receive_data(data or None))
            self._flush_locked()

    def receive(self) -> Future[str | bytes | None]:
        while True:
            with self._lock:
                if self._inbox:
                    return _done(self._inbox.popleft())
                if self._proto.closed:
                    return _done(None)
            self._read_once()

    def send(self, message: str | bytes | bytearray | memoryview) -> Future[None]:
        with self._lock:
            if not self._proto.open:
                return _done(exc=ConnectionClosed(self.close_code, self.close_reason))
            self._proto.send(message)
            self._flush_locked()
        return _done()

    def close(self, code: int = NORMAL, reason: str = "") -> Future[None]:
        with self._lock:
            self._proto.close(code, reason)
            self._flush_locked()
            if self._proto.closed:
                self.close_code, self.close_reason = self._proto.close_code, reason
        self._sock.settimeout(CLOSE_TIMEOUT)
        while not self._proto.closed:
            self._read_once()  # until the peer's answer (or the timeout: 1006)
        self._inbox.clear()
        return _done()


class _Replay(WrappedBody):
    """The first bytes already pulled from the app's iterable, then the rest."""

    def __init__(self, first: bytes, rest: Iterator[Any], iterable: Iterable[Any]) -> None:
        super().__init__(iterable)
        self._first: bytes | None = first
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._rest


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[Any]]


def portable_websocket(app: WSGIApp | None = None, *, timeout: float | None = None,
                       max_message_size: int = 16 * 1024 * 1024) -> Any:
    """Decorator (bare or with options): the app's WebSockets work on gunicorn and werkzeug too.

    Also applies ``wsgiplus.compat.portable`` (futures waited for in place);
    ``timeout`` bounds each such wait, as there.
    """

    def decorate(app: WSGIApp) -> WSGIApp:
        blocking = portable(app, timeout=timeout)

        @functools.wraps(app)
        def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[Any]:
            if is_wsgiplus(environ):
                return app(environ, start_response)
            sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
            handshake = handshake_from_environ(environ) if sock is not None else None
            if handshake is None:
                return blocking(environ, start_response)
            request = BlockingWebSocketRequest(handshake, sock, max_message_size)
            environ["wsgiplus.websocket"] = request
            result = blocking(environ, start_response)
            it = iter(result)
            error = False
            try:
                for item in it:
                    if request.accepted:
                        if item:
                            raise RuntimeError("the app yielded bytes after accept()")
                    elif item:
                        return _Replay(item, it, result)  # plain HTTP after all
            except BaseException:
                error = True
                if not request.accepted:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                    raise
                import logging

                logging.getLogger("wsgiplus.error").exception("WebSocket app error")
            if not request.accepted:
                return result  # an empty plain response: the server sends its head
            close = getattr(result, "close", None)
            if close is not None:
                close()
            ws = request.websocket
            if ws is not None and not ws.closed:
                try:
                    ws.close(INTERNAL_ERROR if error else NORMAL)
                except OSError:
                    pass
            # the response was the 101 we wrote ourselves: the server must send
            # nothing more and drop the connection
            if "gunicorn.socket" in environ:
                raise StopIteration
            raise ConnectionError("WebSocket closed")

        return wrapper

    return decorate(app) if app is not None else decorate
