"""WSGI+ behind a real nginx: two backends, upstream keep-alive, proxy headers, streaming, bodies.

nginx runs from a temporary prefix on an ephemeral loopback port (see
loadbalancers.py) with the configuration docs/deployment.md shows:
``proxy_http_version 1.1``, ``keepalive 16``, ``X-Forwarded-*``,
``proxy_buffering off``. Skipped when nginx is not installed (Debian:
``nginx-light``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import get_many, read_until_close, wait_for
from loadbalancers import LB_APP, NGINX, Backend, free_port, rolling_restart, start_nginx

pytestmark = [pytest.mark.nginx, pytest.mark.skipif(NGINX is None, reason="needs nginx (Debian: nginx-light)")]

# proxy headers are passed explicitly, whatever the defaults become
PROXIED = {"proxy_headers": True, "forwarded_allow_ips": ["127.0.0.1"]}


class Shared:
    """State the two backends' apps share (they run in this process)."""

    def __init__(self, suspend_n: int = 0) -> None:
        self.lock = threading.Lock()
        self.suspend_n = suspend_n
        self.waiting: list[Future] = []
        self.sse_steps = [Future() for _ in range(2)]

    def arrive(self) -> Future:
        """A future completed only once ``suspend_n`` requests are suspended at once."""
        fut: Future = Future()
        with self.lock:
            self.waiting.append(fut)
            if len(self.waiting) >= self.suspend_n:
                for f in self.waiting:
                    f.set_result(None)
        return fut


def make_app(name: str, shared: Shared) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
        path = environ["PATH_INFO"]
        upgrade = environ.get("wsgiplus.websocket")
        if path.startswith("/ws/") and upgrade is not None:
            yield from ws_echo(upgrade.accept(), f"{name} {environ['REMOTE_ADDR']} ")
            return
        if path == "/sse":
            start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
            for i in range(3):
                yield f"data: {name} {i}\n\n".encode()
                if i < 2:
                    yield shared.sse_steps[i]  # completed by the test once it has read event i
            return
        if path == "/suspend":
            yield shared.arrive()
            body = f"{name} resumed".encode()
        elif path.endswith("/echo"):
            data = environ["wsgi.input"].read()
            body = f"{name} {len(data)} {hashlib.sha256(data).hexdigest()}".encode()
        elif path == "/env":
            body = json.dumps({
                "name": name,
                "remote_addr": environ["REMOTE_ADDR"],
                "scheme": environ["wsgi.url_scheme"],
                "host": environ.get("HTTP_HOST"),
                "peer": environ.get("wsgiplus.proxy_peer"),
            }).encode()
        else:
            body = name.encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        yield body

    return app


def ws_echo(ws: Any, prefix: str) -> Iterator[Any]:
    """Echo each message with the backend's name and the client address it believed."""
    while True:
        fut = ws.receive()
        yield fut  # no thread while the client is silent
        message = fut.result()
        if message is None:
            return
        yield ws.send(prefix + message if isinstance(message, str) else message)


@pytest.fixture
def shared() -> Shared:
    return Shared(suspend_n=8)


@pytest.fixture
def backends(serve: Any, shared: Shared) -> list[Any]:
    return [serve(make_app(name, shared), threads=1, **PROXIED) for name in ("a", "b")]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path] | None:
    if shutil.which("openssl") is None:
        return None
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def nginx(tmp_path: Path, backends: list[Any], tls_files: tuple[Path, Path] | None) -> Iterator[Any]:
    balancer = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{b.port}" for b in backends], tls=tls_files)
    yield balancer
    balancer.stop()


def test_requests_reach_both_backends_over_pooled_connections(nginx: Any, backends: list[Any]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{nginx.port}", timeout=10) as client:
        names = [client.get("/who").text for _ in range(20)]
    assert set(names) == {"a", "b"}, names
    # upstream keep-alive: nginx keeps idle connections to both backends open
    assert wait_for(lambda: all(b.server.connections for b in backends), timeout=5)
    assert sum(len(b.server.connections) for b in backends) <= 16


def test_proxy_headers_are_believed(nginx: Any) -> None:
    # the client connects from 127.0.0.2, nginx (the trusted peer) from 127.0.0.1
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as client:
        env = client.get(f"http://127.0.0.1:{nginx.port}/env",
                         headers={"X-Forwarded-For": "203.0.113.66"}).json()  # forged by the client
    assert env["remote_addr"] == "127.0.0.2"  # the client nginx saw, not the forgery, not nginx
    assert env["peer"] == "127.0.0.1"
    assert env["scheme"] == "http"
    assert env["host"] == f"127.0.0.1:{nginx.port}"


def test_scheme_from_a_tls_terminating_nginx(nginx: Any, tls_files: Any) -> None:
    if tls_files is None:
        pytest.skip("needs the openssl command to make a certificate")
    with httpx.Client(verify=False, timeout=10) as client:
        env = client.get(f"https://127.0.0.1:{nginx.tls_port}/env").json()
    assert env["scheme"] == "https" and env["remote_addr"] == "127.0.0.1"


def test_suspended_requests_through_the_proxy(nginx: Any, backends: list[Any], shared: Shared) -> None:
    # 8 requests, one pool thread per backend: each resumes only once all 8 are suspended at once
    results = get_many(nginx.port, ["/suspend"] * 8, timeout=60)
    assert sorted(status for status, _ in results) == [200] * 8, results
    assert {body.split()[0] for _, body in results} == {b"a", b"b"}
    assert all(body.endswith(b" resumed") for _, body in results)


def test_server_sent_events_stream_through_the_proxy(nginx: Any, shared: Shared) -> None:
    # event i+1 is produced only after the client has read event i: nothing may sit in a buffer
    events = []
    with httpx.stream("GET", f"http://127.0.0.1:{nginx.port}/sse", timeout=15) as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        for line in resp.iter_lines():
            if not line:
                continue
            events.append(line)
            step = len(events) - 1
            if step < 2:
                shared.sse_steps[step].set_result(None)
    name = events[0].split()[1]
    assert events == [f"data: {name} {i}" for i in range(3)]


@pytest.mark.parametrize("path", ["/echo", "/buffered/echo"])
def test_request_bodies_through_the_proxy(nginx: Any, path: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(data).hexdigest()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    with httpx.Client(base_url=f"http://127.0.0.1:{nginx.port}", timeout=30) as client:
        sized = client.post(path, content=data)
        chunked = client.post(path, content=chunks())  # Transfer-Encoding: chunked
    for resp in (sized, chunked):
        assert resp.status_code == 200
        assert resp.text.split()[1:] == [str(len(data)), digest]


def test_expect_100_continue_through_the_proxy(nginx: Any) -> None:
    body = b"x" * 100_000
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1024)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")  # asked before the body is sent
        sock.sendall(body)
        raw = interim.partition(b"\r\n\r\n")[2] + read_until_close(sock, 10)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert raw.endswith(f" {len(body)} {hashlib.sha256(body).hexdigest()}".encode())


# -- rolling restarts --------------------------------------------------------------------------


@pytest.mark.rolling
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("transport", "workers"), [("tcp", 2), ("unix", 2), ("tcp", 1)])
def test_rolling_restart_loses_nothing(tmp_path: Path, transport: str, workers: int) -> None:
    """Clients loop (6 GET, 2 POST, ~20 s) while each instance is stopped and started, then
    reloaded with SIGHUP (``--workers 2``; one process: stopped and started again).

    nginx never retries a POST it has sent; every one must be answered.
    """
    (tmp_path / "lbapp.py").write_text(LB_APP)
    if transport == "tcp":
        binds = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    else:
        binds = [f"unix:{tmp_path / name}.sock" for name in ("a", "b")]
    args = ["--workers", str(workers), "--threads", "4", "--no-access-log", "--log-level", "info",
            "--graceful-timeout", "30"]
    backends = [Backend(name, bind, tmp_path, args) for name, bind in zip("ab", binds, strict=True)]
    clients = rolling_restart(backends, lambda: start_nginx(tmp_path / "nginx", binds), reload=workers > 1)
    print(f"\nrolling restart behind nginx ({transport}, --workers {workers}): {clients.summary()}")


def test_websockets_through_the_proxy(nginx: Any, backends: list[Any]) -> None:
    """The documented /ws/ location passes the upgrade on: thread-free sockets (one pool thread per
    backend) on both backends, the client's address from X-Forwarded-For, text and binary echoed."""
    from websockets.sync.client import connect

    def client() -> Any:  # from 127.0.0.2, so the address the backend believes is nginx's header
        sock = socket.create_connection(("127.0.0.1", nginx.port), timeout=10, source_address=("127.0.0.2", 0))
        return connect(f"ws://127.0.0.1:{nginx.port}/ws/chat", sock=sock, open_timeout=10, close_timeout=5)

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(client()) for _ in range(6)]
        names = set()
        for i, ws in enumerate(sockets):  # all six open at once on two single-thread backends
            ws.send(f"hello {i}")
            name, remote, text = ws.recv(timeout=10).split(" ", 2)
            assert (remote, text) == ("127.0.0.2", f"hello {i}")
            names.add(name)
            ws.send(b"\x00\x01binary")
            assert ws.recv(timeout=10) == b"\x00\x01binary"
        assert names == {"a", "b"}  # nginx spread the upgrades over both backends
