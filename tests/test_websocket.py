"""Thread-free WebSockets on a real server, with the ``websockets`` client and raw sockets."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest
from conftest import wait_for
from test_accesslog import access_lines  # noqa: F401 (a fixture)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from wsgiplus.websocket import WebSocket, WebSocketConnection


def echo(ws: WebSocket, record: dict[str, Any] | None = None) -> Any:
    try:
        while True:
            fut = ws.receive()
            yield fut
            message = fut.result()
            if message is None:
                if record is not None:
                    record["code"] = ws.close_code
                return
            yield ws.send(message)
    finally:
        if record is not None:
            record["closed"] = record.get("closed", 0) + 1
            event = record.get("event")
            if event is not None:
                event.set()


def echo_app(environ: dict[str, Any], start_response: Any) -> Any:
    upgrade = environ.get("wsgiplus.websocket")
    if upgrade is None:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"plain"]
    return echo(upgrade.accept())


def url(server: Any, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_connect(port: int, first_frames: bytes = b"", path: str = "/ws") -> tuple[socket.socket, WSConnection]:
    """A WebSocket on a raw socket (wsproto as the client): nothing answered automatically."""
    client = WSConnection(ConnectionType.CLIENT)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(client.send(Request(host="test", target=path)) + first_frames)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        client.receive_data(sock.recv(65536))
        events = list(client.events())
        if events:
            assert isinstance(events[0], AcceptConnection), events
            break
    return sock, client


def test_echo_text_binary_and_plain_http_on_the_same_server(serve) -> None:
    server = serve(echo_app, threads=2)
    with connect(url(server)) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\xff" * 50_000)
        assert ws.recv(timeout=10) == b"\x00\xff" * 50_000
        assert http_get(server.port) == (200, b"plain")  # while the socket is open
        assert ws.protocol.extensions  # permessage-deflate accepted
    assert http_get(server.port) == (200, b"plain")


def test_app_that_ignores_the_upgrade_answers_http(serve) -> None:
    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"no"]

    server = serve(plain)
    with pytest.raises(InvalidStatus) as info:
        connect(url(server), open_timeout=10)
    assert info.value.response.status_code == 200


def test_subprotocol_and_extra_headers(serve) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        upgrade = environ["wsgiplus.websocket"]
        chosen = next(p for p in upgrade.subprotocols if p.startswith("chat"))
        return echo(upgrade.accept(subprotocol=chosen, headers=[("X-Room", "lobby")]))

    server = serve(app)
    with connect(url(server), subprotocols=["other", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.response.headers["X-Room"] == "lobby"
        ws.send("x")
        assert ws.recv(timeout=10) == "x"


def test_client_close_reaches_the_app_and_close_runs_once(serve) -> None:
    record: dict[str, Any] = {"event": threading.Event()}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return echo(environ["wsgiplus.websocket"].accept(), record)

    server = serve(app)
    with connect(url(server)) as ws:
        ws.send("a")
        assert ws.recv(timeout=10) == "a"
        ws.close(4001, "bye")
    assert record["event"].wait(10)
    assert record["code"] == 4001 and record["closed"] == 1


def test_app_closes_with_its_code(serve) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        ws = environ["wsgiplus.websocket"].accept()
        yield ws.send("last words")
        fut = ws.close(4002, "done")
        yield fut
        assert ws.closed and ws.close_code == 4002

    server = serve(app)
    with connect(url(server)) as ws:
        assert ws.recv(timeout=10) == "last words"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 4002 and info.value.rcvd.reason == "done"


def test_app_error_after_accept_closes_1011(serve) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        ws = environ["wsgiplus.websocket"].accept()
        fut = ws.receive()
        yield fut
        raise RuntimeError("boom")

    server = serve(app)
    with connect(url(server)) as ws:
        ws.send("x")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 1011


def test_bytes_after_accept_are_an_app_error(serve) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgiplus.websocket"].accept()
        yield b"not allowed"

    server = serve(app)
    with connect(url(server)) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd.code == 1011


def test_disconnect_while_parked_on_another_future_cancels_it(serve) -> None:
    pending: Future = Future()
    record: dict[str, Any] = {"event": threading.Event()}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgiplus.websocket"].accept()
        try:
            yield pending  # never completed by anyone
        finally:
            record["event"].set()

    server = serve(app)
    sock, _ = raw_connect(server.port)
    sock.close()  # vanishes without a close frame
    assert record["event"].wait(10)
    assert pending.cancelled()


def test_frames_sent_with_the_handshake_are_not_lost(serve) -> None:
    # a client that does not wait for the 101: its first frame is in the same packet
    server = serve(echo_app)
    frame = b"\x81\x85\x00\x00\x00\x00early"  # masked (with a zero key) text "early"
    sock, client = raw_connect(server.port, first_frames=frame)
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            client.receive_data(sock.recv(65536))
            got = [e for e in client.events() if isinstance(e, TextMessage)]
        assert got and got[0].data == "early"
    finally:
        sock.close()


def test_message_too_big_closes_1009(serve) -> None:
    server = serve(echo_app, ws_max_message_size=1000)
    with connect(url(server), compression=None) as ws:
        ws.send("small")
        assert ws.recv(timeout=10) == "small"
        ws.send(b"x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 1009


def test_sockets_are_not_suspended_requests(serve) -> None:
    # three idle sockets, max_suspended=1, a short request_timeout: the sockets
    # are not counted and not cut, and a plain suspending request still runs
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        upgrade = environ.get("wsgiplus.websocket")
        if upgrade is not None:
            return echo(upgrade.accept())
        return suspending(start_response)

    def suspending(start_response: Any) -> Any:
        fut: Future = Future()
        threading.Timer(0.05, fut.set_result, ("ok",)).start()
        yield fut
        start_response("200 OK", [("Content-Length", "2")])
        yield fut.result().encode()

    server = serve(app, max_suspended=1, request_timeout=0.5, threads=2)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(url(server))) for _ in range(3)]
        assert http_get(server.port) == (200, b"ok")
        time.sleep(1.0)  # past request_timeout: still open (a bound in the safe direction)
        for i, ws in enumerate(sockets):
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"m{i}"
        assert server.call(lambda: server.server.websockets) == 3
        assert server.call(lambda: server.server.suspensions.count) == 0
    assert wait_for(lambda: server.call(lambda: server.server.websockets) == 0)


def test_max_websockets_answers_503(serve) -> None:
    server = serve(echo_app, max_websockets=1)
    with connect(url(server)) as first:
        with pytest.raises(InvalidStatus) as info:
            connect(url(server), open_timeout=10)
        assert info.value.response.status_code == 503
        first.send("still")
        assert first.recv(timeout=10) == "still"
    assert wait_for(lambda: server.call(lambda: server.server.websockets) == 0)
    with connect(url(server)) as again:
        again.send("x")
        assert again.recv(timeout=10) == "x"


def test_graceful_shutdown_sends_1001(serve) -> None:
    record: dict[str, Any] = {"event": threading.Event()}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return echo(environ["wsgiplus.websocket"].accept(), record)

    server = serve(app)
    with connect(url(server)) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        stopper.join(15)
    assert info.value.rcvd.code == 1001
    assert record["event"].wait(10) and record["code"] == 1001


def test_ping_timeout_closes_a_silent_peer(serve) -> None:
    server = serve(echo_app, ws_ping_interval=0.2, ws_ping_timeout=0.3)
    sock, client = raw_connect(server.port)
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            client.receive_data(data)
            got += list(client.events())  # pings are NOT answered: events only read
            if any(isinstance(e, CloseConnection) for e in got):
                break
        assert any(isinstance(e, Ping) for e in got)
        close = next(e for e in got if isinstance(e, CloseConnection))
        assert close.code == 1011
    finally:
        sock.close()


def test_pings_keep_an_answering_client_open(serve) -> None:
    server = serve(echo_app, ws_ping_interval=0.1, ws_ping_timeout=0.5)
    with connect(url(server)) as ws:  # answers pings on its own
        time.sleep(1.0)
        ws.send("alive")
        assert ws.recv(timeout=10) == "alive"


def test_idle_timeout(serve) -> None:
    server = serve(echo_app, ws_idle_timeout=0.3, ws_ping_interval=None)
    with connect(url(server)) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=15)
    assert info.value.rcvd.code == 1001 and info.value.rcvd.reason == "idle timeout"


def test_backpressure_parks_the_sender_without_a_thread(serve) -> None:
    state: dict[str, Any] = {"sent": 0, "last": None}
    chunk = b"z" * 65536

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        upgrade = environ.get("wsgiplus.websocket")
        if upgrade is None:
            start_response("200 OK", [("Content-Length", "4")])
            return [b"free"]
        return flood(upgrade.accept())

    def flood(ws: WebSocket) -> Any:
        for _ in range(400):  # 25 MiB: far more than the socket buffers hold
            fut = state["last"] = ws.send(chunk)
            yield fut
            state["sent"] += 1

    server = serve(app, threads=1, ws_per_message_deflate=False)
    sock, client = raw_connect(server.port)
    try:
        # the client reads nothing: the sender must park on an unfinished send
        def parked() -> bool:
            conns = [c for c in server.server.connections if isinstance(c, WebSocketConnection)]
            return bool(conns and conns[0].write_paused and conns[0]._send_waiters)

        assert wait_for(lambda: server.call(parked), timeout=10)
        parked_at = state["sent"]
        assert http_get(server.port) == (200, b"free")  # the only thread is free
        assert state["sent"] == parked_at < 400 and not state["last"].done()
        received = 0
        deadline = time.monotonic() + 60
        while received < 400 and time.monotonic() < deadline:
            client.receive_data(sock.recv(1 << 20))
            received += sum(1 for e in client.events() if getattr(e, "message_finished", False))
        assert received == 400 and wait_for(lambda: state["sent"] == 400)
    finally:
        sock.close()


def test_access_log_line_when_the_socket_ends(serve, access_lines) -> None:  # noqa: F811
    server = serve(echo_app, access_log=True,
                   access_log_format='%(r)s %(s)s %(b)s %({wsgiplus.websocket.close_code}e)s')
    with connect(url(server), compression=None) as ws:
        ws.send("12345")
        assert ws.recv(timeout=10) == "12345"
        assert not any("/ws" in line for line in access_lines)  # not while it is open
        ws.close(4005)
    assert wait_for(lambda: any("/ws" in line for line in access_lines))
    line = next(line for line in access_lines if "/ws" in line)
    method, path, proto, status, sent, code = line.split()
    assert (method, path, status, code) == ("GET", "/ws", "101", "4005")
    assert int(sent) >= 7 + 4  # the echoed frame and the close frame


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_wss_over_tls_and_no_raw_socket_there(serve, certificate, loop: str) -> None:  # noqa: F811
    import ssl

    if loop == "uvloop":
        pytest.importorskip("uvloop")
    cert, key = certificate
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ.get("gunicorn.socket"))
        return echo(environ["wsgiplus.websocket"].accept())

    server = serve(app, certfile=cert, keyfile=key, loop=loop)
    ctx = ssl.create_default_context(cafile=cert)
    with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=ctx) as ws:
        ws.send("secure")
        assert ws.recv(timeout=10) == "secure"
        ws.send(b"\x01" * 200_000)
        assert ws.recv(timeout=10) == b"\x01" * 200_000
    assert seen == [None]  # ciphertext is no use to an app: no raw socket under TLS


from test_limits import certificate  # noqa: E402, F401 (a fixture)
