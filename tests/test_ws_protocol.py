"""The sans-I/O WebSocket layer with bytes only: wsproto's client on the other end."""

from __future__ import annotations

from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from wsgiplus.protocols import ws
from wsgiplus.protocols.http11 import Request as HTTPRequest
from wsgiplus.protocols.http11 import RequestParser
from wsgiplus.runner.wsgi import build_environ, environ_template


def client_request(client: WSConnection, **kw: Any) -> dict[str, Any]:
    """The client's opening handshake, parsed into a WSGI environ by the server's own code."""
    data = client.send(Request(host="example.com", target="/chat", **kw))
    parser = RequestParser()
    events = parser.feed(data)
    request = next(e for e in events if isinstance(e, HTTPRequest))
    return build_environ(environ_template("127.0.0.1", "80", "http", "", False), request, None, None)


def connect(**kw: Any) -> tuple[WSConnection, ws.WebSocketProtocol, ws.Handshake, Any]:
    client = WSConnection(ConnectionType.CLIENT)
    accept_kw = kw.pop("accept", {})
    environ = client_request(client, **kw)
    handshake = ws.handshake_from_environ(environ)
    assert handshake is not None
    head, proto = handshake.accept(**accept_kw)
    client.receive_data(head)
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], AcceptConnection), events
    return client, proto, handshake, events[0]


def feed(proto: ws.WebSocketProtocol, client: WSConnection, *events: Any) -> list[Any]:
    data = b"".join(client.send(e) for e in events)
    return proto.receive_data(data)


def to_client(proto: ws.WebSocketProtocol, client: WSConnection) -> list[Any]:
    client.receive_data(proto.data_to_send())
    return list(client.events())


def test_not_an_upgrade_is_plain_http() -> None:
    base = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_UPGRADE": "websocket",
            "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_VERSION": "13",
            "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert ws.handshake_from_environ(base) is not None
    for key, value in [("REQUEST_METHOD", "POST"), ("HTTP_UPGRADE", "h2c"), ("HTTP_CONNECTION", "close"),
                       ("HTTP_SEC_WEBSOCKET_VERSION", "8"), ("HTTP_SEC_WEBSOCKET_KEY", "short"),
                       ("HTTP_SEC_WEBSOCKET_KEY", "!!!!"), ("SERVER_PROTOCOL", "HTTP/1.0")]:
        assert ws.handshake_from_environ({**base, key: value}) is None, key
    assert ws.handshake_from_environ({**base, "HTTP_CONNECTION": "keep-alive, Upgrade"}) is not None


def test_text_and_binary_echo() -> None:
    client, proto, _, _ = connect()
    events = feed(proto, client, TextMessage(data="héllo"), BytesMessage(data=b"\x00\x01"))
    assert [type(e) for e in events] == [ws.Message, ws.Message]
    assert events[0].data == "héllo" and events[1].data == b"\x00\x01"
    proto.send("back")
    proto.send(b"\xff")
    got = to_client(proto, client)
    assert [(type(e), e.data) for e in got] == [(TextMessage, "back"), (BytesMessage, b"\xff")]


def test_fragments_are_reassembled() -> None:
    client, proto, _, _ = connect()
    events = feed(proto, client, TextMessage(data="ab", message_finished=False),
                  TextMessage(data="cd", message_finished=False), TextMessage(data="e"))
    assert [e.data for e in events] == ["abcde"]
    events = feed(proto, client, BytesMessage(data=b"1", message_finished=False), Ping(payload=b"p"),
                  BytesMessage(data=b"2"))
    # a ping between fragments is answered and does not break the message
    assert [type(e) for e in events] == [ws.Ping, ws.Message] and events[1].data == b"12"
    assert [type(e) for e in to_client(proto, client)] == [Pong]


def test_ping_is_answered_and_pong_reported() -> None:
    client, proto, _, _ = connect()
    events = feed(proto, client, Ping(payload=b"hi"))
    assert isinstance(events[0], ws.Ping)
    got = to_client(proto, client)
    assert isinstance(got[0], Pong) and got[0].payload == b"hi"
    proto.ping(b"srv")
    got = to_client(proto, client)
    assert isinstance(got[0], Ping)
    events = feed(proto, client, got[0].response())
    assert isinstance(events[0], ws.Pong) and events[0].payload == b"srv"


def test_client_close_is_answered_with_its_code() -> None:
    client, proto, _, _ = connect()
    events = feed(proto, client, CloseConnection(code=4000, reason="bye"))
    assert isinstance(events[-1], ws.Closed) and (events[-1].code, events[-1].reason) == (4000, "bye")
    assert proto.closed and not proto.open
    got = to_client(proto, client)
    assert isinstance(got[0], CloseConnection) and got[0].code == 4000
    assert proto.receive_data(b"more") == []  # nothing after the close


def test_server_close_waits_for_the_answer() -> None:
    client, proto, _, _ = connect()
    proto.close(1001, "going away")
    assert not proto.open and not proto.closed
    got = to_client(proto, client)
    assert isinstance(got[0], CloseConnection) and got[0].code == 1001
    with pytest.raises(ConnectionError):
        proto.send("late")
    events = proto.receive_data(client.send(got[0].response()))
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1001 and proto.closed


def test_lost_connection_is_1006() -> None:
    client, proto, _, _ = connect()
    events = proto.receive_data(None)
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1006 and proto.closed


def test_message_too_big_closes_1009_and_drops_the_data() -> None:
    client, proto, _, _ = connect(accept={"max_message_size": 1000})
    events = feed(proto, client, BytesMessage(data=b"x" * 600, message_finished=False))
    assert events == []
    events = feed(proto, client, BytesMessage(data=b"x" * 600))
    assert events == [] and proto._parts == []
    got = to_client(proto, client)
    assert isinstance(got[0], CloseConnection) and got[0].code == 1009
    events = proto.receive_data(client.send(got[0].response()))
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1009
    # text counts UTF-8 bytes, not characters
    client, proto, _, _ = connect(accept={"max_message_size": 1000})
    assert feed(proto, client, TextMessage(data="é" * 400)) != []
    assert feed(proto, client, TextMessage(data="é" * 600)) == []
    assert isinstance(to_client(proto, client)[0], CloseConnection)


def test_invalid_utf8_fails_with_1007() -> None:
    client, proto, _, _ = connect()
    # a text frame with invalid UTF-8, masked as a client must
    frame = bytearray([0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28])
    events = proto.receive_data(bytes(frame))
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1007
    got = to_client(proto, client)
    assert isinstance(got[0], CloseConnection) and got[0].code == 1007


def test_unmasked_frame_is_a_protocol_error() -> None:
    client, proto, _, _ = connect()
    events = proto.receive_data(b"\x81\x02hi")
    assert isinstance(events[-1], ws.Closed) and events[-1].code == 1002
    assert isinstance(to_client(proto, client)[0], CloseConnection)


def test_subprotocol_negotiation() -> None:
    client, proto, handshake, accepted = connect(subprotocols=["chat.v2", "chat.v1"],
                                                accept={"subprotocol": "chat.v1"})
    assert handshake.subprotocols == ["chat.v2", "chat.v1"]
    assert accepted.subprotocol == "chat.v1" and proto.subprotocol == "chat.v1"
    with pytest.raises(ValueError):
        handshake.accept("other")


def test_extra_headers_are_checked() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    handshake = ws.handshake_from_environ(client_request(client))
    head, _ = handshake.accept(headers=[("Set-Cookie", "a=1")])
    assert b"\r\nSet-Cookie: a=1\r\n" in head
    with pytest.raises(ValueError):
        handshake.accept(headers=[("X-Bad", "a\r\nInjected: 1")])
    head, _ = handshake.accept(headers=[("Connection", "close"), ("Content-Length", "0")])
    assert head.count(b"Connection:") == 1 and b"Content-Length" not in head


def test_permessage_deflate_negotiated_and_used() -> None:
    client, proto, handshake, accepted = connect(extensions=[PerMessageDeflate()])
    assert proto.extensions == ["permessage-deflate"]
    assert [e.name for e in accepted.extensions] == ["permessage-deflate"]
    text = "compress me " * 1000
    events = feed(proto, client, TextMessage(data=text))
    assert events[0].data == text
    proto.send(text)
    data = proto.data_to_send()
    assert len(data) < len(text) // 10  # really compressed on the wire
    client.receive_data(data)
    assert [e.data for e in client.events()] == [text]


def test_deflate_declined_when_turned_off() -> None:
    client, proto, _, accepted = connect(extensions=[PerMessageDeflate()], accept={"deflate": False})
    assert proto.extensions == []


def test_deflate_bomb_is_bounded_by_the_limit() -> None:
    client, proto, _, _ = connect(extensions=[PerMessageDeflate()], accept={"max_message_size": 1 << 20})
    events = feed(proto, client, BytesMessage(data=b"\x00" * (8 << 20)))  # 8 MiB of zeros: ~8 KB compressed
    assert events == []
    got = to_client(proto, client)
    assert isinstance(got[0], CloseConnection) and got[0].code == 1009


def test_server_rejected_client_sees_no_accept() -> None:
    # the app that does not accept answers HTTP: a client gets a rejection, not a socket
    client = WSConnection(ConnectionType.CLIENT)
    client_request(client)
    client.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(next(iter(client.events())), RejectConnection)


def test_bytes_counted() -> None:
    client, proto, _, _ = connect()
    data = client.send(TextMessage(data="x" * 10))
    proto.receive_data(data)
    proto.send("y" * 10)
    out = proto.data_to_send()
    assert proto.bytes_in == len(data) and proto.bytes_out == len(out)
