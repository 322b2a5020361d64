"""The raw-socket hand-over: Flask-Sock and python-socketio (threading) run unchanged.

They find the connection in ``environ["gunicorn.socket"]`` (given only to
requests that ask for an upgrade), do the handshake themselves and raise
``StopIteration`` from the app call: the server then sends nothing, closes
and never reuses the connection. Each such socket pins a thread, as on
gunicorn.
"""

from __future__ import annotations

import http.client
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import raw_exchange, wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: Any) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


def test_flask_sock_echo_unchanged(serve, loop_kind: str) -> None:
    from ws_handover import flask_app

    server = serve(flask_app, threads=4, loop=loop_kind)
    for _ in range(3):  # the pool thread comes back each time
        with connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=10) == b"\x00\x01"
            ws.send("bye")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    # the plain route, on a keep-alive connection that saw no upgrade: untouched
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(2):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"plain flask")
    conn.close()
    assert wait_for(lambda: server.call(lambda: len(server.server.connections)) == 0)


def test_handed_over_connection_gets_nothing_more_from_the_server(serve) -> None:
    from ws_handover import flask_app

    server = serve(flask_app, threads=2)
    with connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        ws.send("bye")
        # after the close: no stray HTTP response (a 500 or an empty 200) on the socket
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000


def test_upgrade_the_app_refuses_is_plain_http(serve) -> None:
    from ws_handover import flask_app

    server = serve(flask_app, threads=2)
    # an upgrade request to a plain route: Flask's own HTTP answer (werkzeug refuses a
    # WebSocket request for a non-WebSocket rule with 400), then the connection closes
    data = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Bad Request" in body
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    assert len(body) == length  # the whole response, nothing after it


def test_no_raw_socket_for_plain_requests(serve) -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ.get("gunicorn.socket"))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: foo\r\nConnection: Upgrade, close\r\n\r\n")
    assert seen[0] is None and isinstance(seen[1], socket.socket)
    assert seen[1].fileno() == -1  # closed by the server when the request ended


def test_python_socketio_threading_mode_unchanged(serve) -> None:
    socketio = pytest.importorskip("socketio")
    from ws_handover import socketio_app

    server = serve(socketio_app, threads=8)
    for transports in (["websocket"], ["polling", "websocket"]):
        client = socketio.Client(reconnection=False)
        got = threading.Event()
        box: list[Any] = []

        @client.on("pong_you")
        def on_pong(data: Any, box: list[Any] = box, got: threading.Event = got) -> None:
            box.append(data)
            got.set()

        client.connect(f"http://127.0.0.1:{server.port}", transports=transports, wait_timeout=10)
        try:
            assert client.transport() == "websocket" or transports == ["polling", "websocket"]
            ack = client.call("ping_me", "hi", timeout=10)
            assert ack == {"ack": "hi"}
            assert got.wait(10) and box == [{"got": "hi"}]
        finally:
            client.disconnect()
