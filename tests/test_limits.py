"""Server-side limits and guards: TLS, connection cap, suspension cap and timeout, blocking-step warning."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from conftest import get_many, hello_app, raw_exchange, read_until_close, wait_for


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: Any) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return str(cert), str(key)


def test_tls_served_to_a_real_client(serve: Any, certificate: tuple[str, str]) -> None:
    cert, key = certificate

    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.url_scheme"].encode()]

    server = serve(app, certfile=cert, keyfile=key)
    ctx = ssl.create_default_context(cafile=cert)
    r = httpx.get(f"https://127.0.0.1:{server.port}/", verify=ctx)
    assert r.status_code == 200 and r.text == "https"


def test_max_connections_answers_503(serve: Any) -> None:
    server = serve(hello_app, max_connections=2)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
    try:
        assert wait_for(lambda: len(server.server.connections) == 2)
        raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 503 ")
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: not server.server.connections)
    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").endswith(
        b"Hello, world!"
    )


def test_max_suspended_refuses_beyond_the_limit(serve: Any, caplog: Any) -> None:
    release = threading.Event()
    closed: list[str] = []

    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()  # each its own: the refused one gets cancelled
        def finish() -> None:
            if release.wait(30) and not fut.cancelled():
                fut.set_result(None)

        threading.Thread(target=finish, daemon=True).start()
        try:
            yield fut
            start_response("200 OK", [])
            yield b"ok"
        finally:
            closed.append(environ["QUERY_STRING"])

    server = serve(app, max_suspended=5, threads=2)
    results: list = []
    t = threading.Thread(target=lambda: results.extend(get_many(server.port, [f"/?{i}" for i in range(5)])))
    t.start()
    assert wait_for(lambda: server.server.suspensions.count == 5)
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"):
        assert get_many(server.port, ["/?extra"])[0][0] == 503
    assert "already suspended" in caplog.text and "extra" in closed
    release.set()
    t.join(30)
    assert results == [(200, b"ok")] * 5
    assert server.server.suspensions.count == 0


def test_suspend_timeout_gives_504(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        if environ["PATH_INFO"] == "/fast":
            threading.Timer(0.01, fut.set_result, args=(None,)).start()
        yield fut
        start_response("200 OK", [])
        yield b"done"

    server = serve(app, suspend_timeout=0.3)
    assert get_many(server.port, ["/slow", "/fast"], timeout=20) == [
        (504, b"504 Gateway Timeout\na suspension ran past its timeout\n"), (200, b"done")]


def test_blocking_step_is_reported_with_its_stack(serve: Any, caplog: Any) -> None:
    release = threading.Event()

    def slow_app(environ: dict, start_response: Any) -> list[bytes]:
        release.wait(10)  # holds its thread, as a blocking call would
        start_response("200 OK", [])
        return [b"late"]

    server = serve(slow_app, blocking_warn=0.2)
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert wait_for(lambda: "has held thread" in caplog.text, timeout=10)
            release.set()
            assert read_until_close(sock).endswith(b"late")
    assert "slow_app" in caplog.text  # the stack names the function that blocks
    time.sleep(0)


def test_graceful_shutdown_lets_suspended_requests_finish(serve: Any) -> None:
    futures: list[Future] = []

    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        futures.append(fut)
        yield fut
        start_response("200 OK", [])
        yield b"finished"

    server = serve(app, threads=2)
    results: list = []
    t = threading.Thread(target=lambda: results.extend(get_many(server.port, ["/"] * 20)))
    t.start()
    assert wait_for(lambda: len(futures) == 20)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.2)
    # no new connections once stopping
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).recv(1)
    for fut in futures:
        fut.set_result(None)
    t.join(30)
    stopper.join(30)
    assert results == [(200, b"finished")] * 20


def test_graceful_shutdown_answers_a_connection_accepted_before_it(serve: Any) -> None:
    """A client that connected but had not sent its request yet still gets an answer."""
    server = serve(hello_app, threads=2)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    keepalive = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        keepalive.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert keepalive.recv(4096).endswith(b"Hello, world!")  # now idle between requests
        assert wait_for(lambda: len(server.server.connections) == 2)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert wait_for(lambda: len(server.server.connections) == 1)  # the idle keep-alive one closed
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = read_until_close(sock)
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in raw
        assert raw.endswith(b"Hello, world!")
        stopper.join(30)
    finally:
        sock.close()
        keepalive.close()


def test_keepalive_timeout_zero_means_no_keep_alive(serve: Any) -> None:
    server = serve(hello_app, keepalive_timeout=0)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"Connection: close" in raw and raw.endswith(b"Hello, world!")


@pytest.mark.parametrize(
    "request_bytes, status, logged",
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "414 request target too long"),
        (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"\r\n",
         431, "431 too many header fields"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 400 + b"\r\n\r\n", 431, "431 header field too large"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999\r\n\r\n", 413, "413 request body too large"),
        (b"GET / HTTP/1.1\r\nHost: t\r\n", 408, "request head timeout"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc", 408, "request body timeout"),
    ],
)
def test_each_limit_gets_its_status_and_a_log_line(serve: Any, caplog: Any, request_bytes: bytes,
                                                   status: int, logged: str) -> None:
    server = serve(hello_app, max_request_line=200, max_header_count=10, max_header_size=300,
                   max_body_size=1000, header_timeout=0.3, body_timeout=0.3)
    with caplog.at_level(logging.INFO, logger="wsgiplus.error"):
        raw = raw_exchange(server.port, request_bytes, timeout=10)
        assert raw.startswith(b"HTTP/1.1 %d " % status)
        assert wait_for(lambda: logged in caplog.text, timeout=5), caplog.text
