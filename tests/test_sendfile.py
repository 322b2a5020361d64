"""``wsgi.file_wrapper`` over a regular file: ``os.sendfile`` on plain TCP, the copy path elsewhere.

Real server, real sockets: a 20 MB file byte-exact (sendfile and the copy path), a client
leaving mid-file (the file is closed), HEAD, a Content-Length shorter and longer than the
file, a file offset set by the app, keep-alive after a file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import read_until_close

SIZE = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "big.bin"
    block = hashlib.sha256(b"wsgiplus").digest() * 4096  # 128 KiB, not all one byte
    with open(path, "wb") as f:
        for i in range(SIZE // len(block)):
            f.write(bytes([i % 251]) + block[1:])
    return path


class TrackedFile:
    """A real file whose ``close`` the test can wait for."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 (closed by the server through the wrapper)
        self.closed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def close(self) -> None:
        self.f.close()
        self.closed.set()


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.sendfile

    def counting(out: int, fd: int, offset: int | None, count: int) -> int:
        n = real(out, fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def file_app(path: Path, opened: list[TrackedFile], *, offset: int = 0, length: int | None = None):
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        f = TrackedFile(path)
        opened.append(f)
        if offset:
            f.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 8192)  # werkzeug's block size

    return app


def get(port: int, path: str = "/", method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sendfile", [True, False])
def test_a_20mb_file_arrives_byte_exact(serve, big_file: Path, sendfile_calls: list[int], sendfile: bool,
                                        loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    opened: list[TrackedFile] = []
    server = serve(file_app(big_file, opened), sendfile=sendfile, loop=loop)
    resp, body = get(server.port)
    assert resp.status == 200
    # sendfile knows the length (Content-Length framing); the copy path streams it chunked
    assert resp.getheader("Content-Length") == (str(SIZE) if sendfile else None)
    assert hashlib.sha256(body).digest() == hashlib.sha256(big_file.read_bytes()).digest()
    assert opened[0].closed.wait(10)
    if sendfile:
        assert sum(sendfile_calls) == SIZE
    else:
        assert sendfile_calls == []


def test_keep_alive_after_a_file_and_content_length_bounds_it(serve, big_file: Path,
                                                                 sendfile_calls: list[int]) -> None:
    """The app's Content-Length (shorter than the file) is what is sent; the connection goes on."""
    opened: list[TrackedFile] = []
    server = serve(file_app(big_file, opened, offset=100, length=1000))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    expected = big_file.read_bytes()[100:1100]
    for _ in range(3):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == "1000"
        assert resp.read() == expected
    conn.close()
    assert sum(sendfile_calls) == 3000
    assert all(f.closed.wait(10) for f in opened)


def test_a_content_length_longer_than_the_file_is_cut_not_padded(serve, tmp_path: Path,
                                                                 sendfile_calls: list[int]) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 500)
    opened: list[TrackedFile] = []
    server = serve(file_app(small, opened, length=800))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_until_close(sock, 10)  # the server closes: the body is short
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 800" in head and body == b"x" * 500
    assert sendfile_calls == []  # the copy path frames a short body
    assert opened[0].closed.wait(10)


def test_head_sends_the_length_and_no_body(serve, big_file: Path, sendfile_calls: list[int]) -> None:
    opened: list[TrackedFile] = []
    server = serve(file_app(big_file, opened))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                     b"Range: x\r\n\r\n")
        conn = http.client.HTTPResponse(sock, method="HEAD")
        conn.begin()
        assert conn.status == 200 and conn.getheader("Content-Length") == str(SIZE)
        assert conn.read() == b""
        second = http.client.HTTPResponse(sock, method="GET")  # the next response follows at once
        second.begin()
        assert second.status == 200 and len(second.read()) == SIZE
    assert all(f.closed.wait(10) for f in opened)
    assert sum(sendfile_calls) == SIZE  # the HEAD sent no file bytes


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_client_leaving_mid_file_closes_the_file(serve, big_file: Path, sendfile_calls: list[int],
                                                   loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    opened: list[TrackedFile] = []
    server = serve(file_app(big_file, opened), loop=loop)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    got = 0
    while got < 256 * 1024:
        chunk = sock.recv(65536)
        assert chunk
        got += len(chunk)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    sock.close()
    assert opened[0].closed.wait(10)
    assert 0 < sum(sendfile_calls) < SIZE
    # the server goes on serving
    resp, body = get(server.port)
    assert resp.status == 200 and len(body) == SIZE


def test_a_pipe_is_not_sent_with_sendfile(serve, sendfile_calls: list[int]) -> None:
    """Not a regular file: the copy path, in the app's blocks."""
    r, w = os.pipe()
    os.write(w, b"p" * 1000)
    os.close(w)

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](os.fdopen(r, "rb"), 100)

    server = serve(app)
    resp, body = get(server.port)
    assert resp.status == 200 and body == b"p" * 1000
    assert sendfile_calls == []
