"""The graceful stop's drain, connection by connection: nothing a client (or a pooling proxy)
has sent is lost. Real server, raw sockets; every wait bounded.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from conftest import hello_app, read_until_close, wait_for

from wsgiplus.server.core import Server, new_event_loop
from wsgiplus.shell.config import Config

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One response with a Content-Length body or a chunked one, read off a kept-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lower = head.lower()
            if b"content-length:" in lower:
                length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    return data
            elif rest.endswith(b"0\r\n\r\n"):
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def stop_in_background(server: Any) -> threading.Thread:
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 30})
    stopper.start()
    assert wait_for(lambda: server.server.stopping, timeout=10)
    return stopper


def test_request_on_an_idle_keepalive_connection_during_the_grace_is_answered(serve: Any) -> None:
    server = serve(hello_app, drain_grace=30)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET)
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: close" not in first
        stopper = stop_in_background(server)  # the connection is idle now, and kept
        sock.sendall(GET)  # as a proxy reusing its pooled connection would
        raw = read_until_close(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in raw
    assert raw.endswith(b"Hello, world!")
    stopper.join(30)
    assert not stopper.is_alive()


def test_an_idle_connection_is_closed_after_the_grace(serve: Any) -> None:
    server = serve(hello_app, drain_grace=0.2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        stopper = stop_in_background(server)
        assert read_until_close(sock, timeout=10) == b""  # closed, nothing sent
    stopper.join(30)
    assert not stopper.is_alive()


def test_drain_grace_zero_closes_idle_connections_at_once(serve: Any) -> None:
    server = serve(hello_app, drain_grace=0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        stopper = stop_in_background(server)
        assert read_until_close(sock, timeout=10) == b""
    stopper.join(30)


def _suspending_app(futures: list[Future], stream_first: bool) -> Any:
    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/plain":
            start_response("200 OK", [("Content-Length", "2")])
            yield b"ok"
            return
        fut: Future = Future()
        futures.append(fut)
        if stream_first:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"head sent; "
        yield fut
        if not stream_first:
            start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"done"

    return app


def test_a_response_whose_head_is_not_sent_yet_says_connection_close(serve: Any) -> None:
    futures: list[Future] = []
    server = serve(_suspending_app(futures, stream_first=False), drain_grace=30)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET)
        assert wait_for(lambda: len(futures) == 1)
        stopper = stop_in_background(server)
        futures[0].set_result(None)
        raw = read_until_close(sock)  # the server closes after it: no grace needed
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in raw
    assert b"done" in raw
    stopper.join(30)
    assert not stopper.is_alive()


def test_a_keepalive_response_ending_during_the_stop_keeps_the_connection_for_the_grace(serve: Any) -> None:
    futures: list[Future] = []
    server = serve(_suspending_app(futures, stream_first=True), drain_grace=30)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(GET)
        assert wait_for(lambda: len(futures) == 1)  # the head (keep-alive) is out
        stopper = stop_in_background(server)
        futures[0].set_result(None)
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: close" not in first
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")  # the client took the keep-alive at its word
        raw = read_until_close(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in raw and raw.endswith(b"ok")
    stopper.join(30)
    assert not stopper.is_alive()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_connections_waiting_in_the_accept_queue_are_answered(loop_kind: str, tls: bool, tmp_path: Any) -> None:
    """Connections the kernel queued but the loop had not accepted yet when the stop began."""
    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
    options: dict[str, Any] = {}
    client_tls = None
    if tls:
        if shutil.which("openssl") is None:
            pytest.skip("needs the openssl command to make a certificate")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
        options = {"certfile": str(cert), "keyfile": str(key)}
        client_tls = ssl.create_default_context(cafile=str(cert))
        client_tls.check_hostname = False
    server = Server(hello_app, Config(bind=["127.0.0.1:0"], threads=2, access_log=False, drain_grace=0, **options))
    loop = new_event_loop(loop_kind)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    socks: list[socket.socket] = []
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        port = server.sockets[0].getsockname()[1]
        blocked, go = threading.Event(), threading.Event()
        stopped: list[Any] = []

        def hold_the_loop() -> None:
            blocked.set()
            go.wait(10)
            # the stop is the next thing the loop runs, before it looks at the listening socket
            stopped.append(loop.create_task(server.shutdown(10)))

        loop.call_soon_threadsafe(hold_the_loop)
        assert blocked.wait(10)
        for _ in range(5):  # the kernel completes these handshakes; nobody accepts them yet
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if client_tls is None:
                sock.sendall(GET)
            socks.append(sock)
        go.set()
        if client_tls is not None:  # the TLS handshake needs the server: now
            socks = [client_tls.wrap_socket(sock) for sock in socks]
            for sock in socks:
                sock.sendall(GET)
        answers = [read_until_close(sock, timeout=10) for sock in socks]
        for sock in socks:  # (a TLS connection is gone only once both sides have closed)
            sock.close()
        assert all(a.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in a for a in answers), answers
        assert wait_for(lambda: bool(stopped) and stopped[0].done(), timeout=20)
        # and new connections are refused now
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            refused = False
        except OSError:
            refused = True
        assert refused
    finally:
        for sock in socks:
            sock.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_an_old_instance_leaves_a_newer_ones_unix_socket_alone(tmp_path: Any) -> None:
    """Rolling restart on one path: the new instance binds it before the old one exits."""
    from wsgiplus.testing import ServerThread

    path = tmp_path / "app.sock"
    old = ServerThread(hello_app, bind=[f"unix:{path}"]).start()
    new = ServerThread(hello_app, bind=[f"unix:{path}"]).start()  # replaces the file
    try:
        old.stop()
        assert path.exists()  # the old one's exit did not remove the new one's socket file
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_until_close(sock).endswith(b"Hello, world!")
    finally:
        old.stop()
        new.stop()
    assert not path.exists()  # the last one out removes it
