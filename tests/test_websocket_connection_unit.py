"""``WebSocketConnection`` alone: a fake loop and transport, wsproto as the client (bytes only)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fakes import FakeLoop, FakeTransport
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, Request, TextMessage

from wsgiplus.protocols import ws as wsproto_layer
from wsgiplus.websocket import CLOSE_TIMEOUT, ConnectionClosed, WebSocket, WebSocketConnection


class Transport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.buffered = 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return self.buffered


def setup(**kw: Any) -> tuple[FakeLoop, Transport, WSConnection, WebSocketConnection, WebSocket, list[str]]:
    client = WSConnection(ConnectionType.CLIENT)
    req = client.send(Request(host="t", target="/"))
    key = next(line.split(b": ")[1] for line in req.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key"))
    handshake = wsproto_layer.Handshake(key, [], [])
    head, proto = handshake.accept(deflate=False)
    client.receive_data(head)
    list(client.events())
    loop = FakeLoop()
    socket = WebSocket(proto)
    calls: list[str] = []
    conn = WebSocketConnection(proto, socket, loop, on_end=lambda c: calls.append("end"),
                               on_lost=lambda c: calls.append("lost"), **kw)
    transport = Transport()
    conn.start(transport, b"HEAD")  # type: ignore[arg-type]
    assert transport.take() == b"HEAD" and transport.protocol is conn
    conn.loop_thread = -1  # the test thread is not the loop: app calls are posted
    return loop, transport, client, conn, socket, calls


def from_server(transport: Transport, client: WSConnection) -> list[Any]:
    client.receive_data(transport.take())
    return list(client.events())


def test_receive_waits_then_gets_the_message() -> None:
    loop, transport, client, conn, socket, _ = setup()
    fut = socket.receive()
    loop.run_ready()
    assert not fut.done()
    conn.data_received(client.send(TextMessage(data="hi")))
    assert fut.result() == "hi"


def test_unreceived_messages_pause_reading_until_the_app_receives() -> None:
    loop, transport, client, conn, socket, _ = setup(write_buffer_high=1000)
    for _ in range(5):
        conn.data_received(client.send(BytesMessage(data=b"x" * 300)))
    assert not transport.reading and conn.reading_paused
    futs = [socket.receive() for _ in range(5)]
    loop.run_ready()
    assert all(f.result() == b"x" * 300 for f in futs)
    assert transport.reading and not conn.reading_paused


def test_send_waits_for_the_drain_and_fails_after_close() -> None:
    loop, transport, client, conn, socket, _ = setup(write_buffer_high=100)
    first = socket.send("a")
    assert first.done()  # below the mark: done at once, written in order
    loop.run_ready()
    conn.pause_writing()
    second = socket.send("b")
    loop.run_ready()
    assert not second.done()
    conn.resume_writing()
    assert second.done() and second.exception() is None
    assert [e.data for e in from_server(transport, client)] == ["a", "b"]
    conn.data_received(client.send(CloseConnection(code=1000)))
    third = socket.send("late")
    loop.run_ready()
    assert isinstance(third.exception(), ConnectionClosed)


def test_fast_sends_stop_being_done_at_once_past_the_mark() -> None:
    loop, transport, client, conn, socket, _ = setup(write_buffer_high=1000)
    futs = [socket.send(b"y" * 400) for _ in range(5)]  # nothing processed by the loop yet
    assert [f.done() for f in futs] == [True, True, False, False, False]
    loop.run_ready()
    assert all(f.done() for f in futs)
    assert len(from_server(transport, client)) == 5


def test_ping_then_close_1011_when_no_pong_then_abort() -> None:
    loop, transport, client, conn, socket, _ = setup(ping_interval=10, ping_timeout=5)
    loop.now = 11
    conn.check_timer(loop.now)
    assert isinstance(from_server(transport, client)[0], Ping)
    loop.now = 17
    conn.check_timer(loop.now)
    close = from_server(transport, client)[0]
    assert isinstance(close, CloseConnection) and close.code == 1011
    assert not transport.closed
    loop.now = 17 + CLOSE_TIMEOUT + 1
    conn.check_timer(loop.now)
    assert transport.aborted


def test_answered_ping_keeps_it_open() -> None:
    loop, transport, client, conn, socket, _ = setup(ping_interval=10, ping_timeout=5)
    loop.now = 11
    conn.check_timer(loop.now)
    ping = from_server(transport, client)[0]
    conn.data_received(client.send(ping.response()))
    loop.now = 17
    conn.check_timer(loop.now)
    assert transport.take() == b"" and not transport.closed


def test_lost_connection_gives_none_and_ends_once_with_the_app() -> None:
    loop, transport, client, conn, socket, calls = setup()
    fut = socket.receive()
    loop.run_ready()
    conn.connection_lost(None)
    assert fut.result() is None and socket.close_code == 1006
    assert calls == ["lost"]
    conn.app_finished(False)
    assert calls == ["lost", "end"]
    conn.app_finished(False)
    assert calls == ["lost", "end"]


def test_app_finished_first_closes_1000_and_waits_for_the_peer() -> None:
    loop, transport, client, conn, socket, calls = setup()
    conn.app_finished(False)
    close = from_server(transport, client)[0]
    assert isinstance(close, CloseConnection) and close.code == 1000
    conn.data_received(client.send(close.response()))
    assert transport.closed and socket.close_code == 1000
    conn.connection_lost(None)
    assert calls == ["lost", "end"]


def test_shutdown_sends_1001() -> None:
    loop, transport, client, conn, socket, _ = setup()
    fut = socket.receive()
    loop.run_ready()
    conn.shutdown()
    close = from_server(transport, client)[0]
    assert close.code == 1001
    conn.data_received(client.send(close.response()))
    assert fut.result() is None and socket.close_code == 1001


def test_calls_from_many_threads_are_serialised_on_the_loop() -> None:
    loop, transport, client, conn, socket, _ = setup(write_buffer_high=1 << 20)
    threads = [threading.Thread(target=lambda i=i: [socket.send(f"{i}") for _ in range(50)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    loop.run_ready()
    got = from_server(transport, client)
    assert sorted(e.data for e in got) == sorted(f"{i}" for i in range(4) for _ in range(50))


def test_close_code_validation() -> None:
    _, _, _, _, socket, _ = setup()
    with pytest.raises(ValueError):
        socket.close(1005)
    with pytest.raises(TypeError):
        socket.send(123)  # type: ignore[arg-type]
