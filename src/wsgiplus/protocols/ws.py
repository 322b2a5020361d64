"""Sans-I/O WebSocket (RFC 6455, RFC 7692) for a server, on ``wsproto``.

Nothing here touches a socket, a thread or an event loop: the handshake is
read from a PEP 3333 environ (so the same code serves WSGI+ and the portable
path on other servers), and a ``WebSocketProtocol`` turns received bytes into
whole messages and control events, and messages into bytes to send.

What this layer adds to wsproto's frame-level connection:

- fragments are reassembled into whole messages (``str`` or ``bytes``);
- a ping is answered (the pong is queued in ``data_to_send()``);
- a message larger than ``max_message_size`` closes the socket with 1009 and
  its data is dropped as it arrives (memory stays bounded by the limit, plus
  one decompressed slice with ``permessage-deflate``: input is fed to the
  decompressor in slices so a compression bomb cannot expand at once);
- a protocol error (bad frame, bad UTF-8, bad close code) answers the close
  code the RFC asks for (1002, 1007) and reports ``Closed``;
- the close handshake both ways, with the code and reason kept.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    TextMessage,
)
from wsproto.events import (
    Ping as WsPing,
)
from wsproto.events import (
    Pong as WsPong,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError, generate_accept_token

__all__ = [
    "Closed",
    "Handshake",
    "Message",
    "Ping",
    "Pong",
    "WebSocketProtocol",
    "handshake_from_environ",
]

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
_DEFLATE_SLICE = 16 * 1024  # compressed bytes fed to the decompressor at once

# close codes
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
ABNORMAL = 1006  # never sent: the connection was lost without a close frame
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011


class Message:
    """A whole message: ``data`` is ``str`` for a text message, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Message {type(self.data).__name__} {len(self.data)}>"


class Ping:
    """The peer pinged (already answered)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    """The peer answered a ping (or sent an unsolicited pong)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Closed:
    """The WebSocket is closed: both close frames exchanged, or the connection lost (1006)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Closed {self.code} {self.reason!r}>"


def _tokens(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Handshake:
    """A valid WebSocket opening handshake (RFC 6455 §4.2.1), read from the environ.

    ``subprotocols`` and ``extensions`` are what the client offered, in its
    order. ``accept()`` builds the 101 response and the protocol object.
    """

    __slots__ = ("key", "subprotocols", "extensions")

    def __init__(self, key: bytes, subprotocols: list[str], extensions: list[str]) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.extensions = extensions

    def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        *,
        deflate: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        server_header: bytes | None = b"wsgiplus",
        trailing_data: bytes = b"",
    ) -> tuple[bytes, WebSocketProtocol]:
        """The ``101 Switching Protocols`` head, and the protocol to speak after it.

        ``subprotocol`` must be one the client offered (``ValueError`` otherwise:
        answering one it did not offer makes a conforming client fail). ``headers``
        are extra response fields (cookies, say), checked like any response header.
        """
        from ..runner.wsgi import HOP_BY_HOP, check_headers

        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client "
                             f"(offered: {self.subprotocols})")
        # checked like any response header; framing and hop-by-hop fields are the 101's own
        extra = [(n, v) for n, v in check_headers(list(headers))
                 if n.lower() not in HOP_BY_HOP and n.lower() not in ("content-length", "upgrade")]
        lines = [
            b"HTTP/1.1 101 Switching Protocols\r\n",
            b"Upgrade: websocket\r\n",
            b"Connection: Upgrade\r\n",
            b"Sec-WebSocket-Accept: " + generate_accept_token(self.key) + b"\r\n",
        ]
        if subprotocol is not None:
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n")
        extensions: list[Any] = []
        if deflate and self.extensions:
            ext = PerMessageDeflate()
            answer = server_extensions_handshake(self.extensions, [ext])
            if answer is not None and ext.enabled():
                lines.append(b"Sec-WebSocket-Extensions: " + answer + b"\r\n")
                extensions.append(ext)
        for name, value in extra:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if server_header:
            lines.append(b"Server: " + server_header + b"\r\n")
        lines.append(b"Date: " + formatdate(usegmt=True).encode("ascii") + b"\r\n\r\n")
        proto = WebSocketProtocol(extensions, max_message_size, subprotocol)
        if trailing_data:
            proto.pending_input = trailing_data
        return b"".join(lines), proto


def handshake_from_environ(environ: dict[str, Any]) -> Handshake | None:
    """The handshake if this request is a valid WebSocket upgrade, else None.

    A request that is not one (no ``Upgrade: websocket``, not GET, a missing or
    malformed key, another version) is an ordinary HTTP request for the app.
    """
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    if "websocket" not in _tokens(environ.get("HTTP_UPGRADE", "")):
        return None
    if "upgrade" not in _tokens(environ.get("HTTP_CONNECTION", "")):
        return None
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return None
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return None
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return Handshake(
        key.encode("ascii"),
        _list(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")),
        _list(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")),
    )


Event = Message | Ping | Pong | Closed


class WebSocketProtocol:
    """One WebSocket after its handshake: bytes in, events out; messages in, bytes out.

    ``receive_data(None)`` means the transport is gone (``Closed(1006)``).
    ``open`` is True until a close frame has been sent or received; after
    ``Closed`` has been reported ``closed`` is True and the transport should be
    closed once ``data_to_send()`` has been written.
    """

    def __init__(self, extensions: list[Any] | None = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE,
                 subprotocol: str | None = None) -> None:
        self._conn = Connection(ConnectionType.SERVER, extensions or [])
        self.extensions = [e.name for e in extensions or []]
        self.subprotocol = subprotocol
        self.max_message_size = max_message_size
        self._deflate = bool(extensions)
        self._out: list[bytes] = []
        self._parts: list[Any] = []
        self._size = 0
        self._dropping = False  # the message in progress is over the limit
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.pending_input = b""  # bytes that arrived with the handshake, fed first
        self.bytes_in = 0
        self.bytes_out = 0

    # -- state ---------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._conn.state is ConnectionState.OPEN

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self._out)

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        data = out[0] if len(out) == 1 else b"".join(out)
        self.bytes_out += len(data)
        return data

    # -- sending -------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Queue one whole message (``str``: text, bytes-like: binary)."""
        if not self.open:
            raise ConnectionError("the WebSocket is closing or closed")
        if isinstance(data, str):
            event: Any = TextMessage(data=data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(data))
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(data).__name__}")
        self._out.append(bytes(self._conn.send(event)))

    def ping(self, payload: bytes = b"") -> None:
        if self.open:
            self._out.append(bytes(self._conn.send(WsPing(payload=payload))))

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the close handshake (a no-op once a close frame has been sent)."""
        state = self._conn.state
        if state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        self._out.append(bytes(self._conn.send(CloseConnection(code=code, reason=reason or None))))
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._conn.state is ConnectionState.CLOSED:
            self.closed = True

    # -- receiving -----------------------------------------------------------

    def receive_data(self, data: bytes | None) -> list[Event]:
        if self.pending_input:
            data, self.pending_input = self.pending_input + (data or b""), b""
        if self.closed:
            return []
        events: list[Event] = []
        if data is None:
            self._conn.receive_data(None)
            self._drain(events)
            return events
        self.bytes_in += len(data)
        if self._deflate and len(data) > _DEFLATE_SLICE:
            view = memoryview(data)
            for start in range(0, len(data), _DEFLATE_SLICE):
                self._feed(bytes(view[start : start + _DEFLATE_SLICE]), events)
                if self.closed:
                    break
        else:
            self._feed(data, events)
        return events

    def _feed(self, data: bytes, events: list[Event]) -> None:
        try:
            self._conn.receive_data(data)
        except LocalProtocolError:  # bytes after the close: ignore them
            return
        self._drain(events)

    def _drain(self, events: list[Event]) -> None:
        for event in self._conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self._message_part(event, events)
            elif kind is WsPing:
                if self._conn.state is ConnectionState.OPEN:
                    self._out.append(bytes(self._conn.send(event.response())))
                events.append(Ping(bytes(event.payload)))
            elif kind is WsPong:
                events.append(Pong(bytes(event.payload)))
            elif kind is CloseConnection:
                self._on_close(event, events)

    def _message_part(self, event: Any, events: list[Event]) -> None:
        if not self.open:
            return  # data after we started closing (after a 1009, say): dropped
        data = event.data
        if not self._dropping:
            if type(data) is str:
                self._size += len(data) if data.isascii() else len(data.encode("utf-8"))
            else:
                self._size += len(data)
            if self._size > self.max_message_size:
                self._dropping = True
                self._parts = []
                self.close(MESSAGE_TOO_BIG, "message too big")
            else:
                self._parts.append(data)
        if event.message_finished:
            parts, self._parts = self._parts, []
            self._size = 0
            if self._dropping:
                self._dropping = False
                return
            if type(data) is str:
                events.append(Message(parts[0] if len(parts) == 1 else "".join(parts)))
            else:
                events.append(Message(bytes(parts[0]) if len(parts) == 1 else b"".join(parts)))

    def _on_close(self, event: CloseConnection, events: list[Event]) -> None:
        code, reason = int(event.code), event.reason or ""
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING or state is ConnectionState.OPEN:
            # REMOTE_CLOSING: the peer closed first; OPEN: its bytes broke the
            # protocol and wsproto reports the code to fail with (1002, 1007).
            # Either way answer with that code; the transport closes after it.
            self._out.append(bytes(self._conn.send(event.response())))
            self.close_code, self.close_reason = code, reason
        elif self.close_code is None:
            self.close_code, self.close_reason = code, reason  # lost (1006)
        # else: we closed first and the peer answered (or vanished): our code stays
        self.closed = True
        events.append(Closed(self.close_code, self.close_reason))
