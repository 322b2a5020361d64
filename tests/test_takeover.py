"""The escape hatch: an app's own asyncio protocol takes the connection over.

Tested with a tiny custom protocol, "x-upper": after ``101`` every line the
client sends comes back upper-cased; ``quit`` ends the connection.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from conftest import wait_for

HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-upper\r\nConnection: Upgrade\r\n\r\n"


class Upper(asyncio.Protocol):
    made: list[Upper] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""
        Upper.made.append(self)
        transport.write(HEAD)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            if line == b"quit":
                self.transport.close()
                return
            self.transport.write(line.upper() + b"\n")  # type: ignore[attr-defined]


def make_app(closed: threading.Event) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_UPGRADE") == "x-upper":
            environ["wsgiplus.takeover"](Upper)
            return closing_body(closed)
        assert "wsgiplus.takeover" not in environ  # only upgrade requests may be taken over
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


def closing_body(closed: threading.Event) -> Any:
    try:
        yield from ()
    finally:
        closed.set()


def read_until(sock: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while marker not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_custom_protocol_takes_the_connection(serve) -> None:
    closed = threading.Event()
    server = serve(make_app(closed), keepalive_timeout=0.2, header_timeout=0.2)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        # the first line travels with the request head: it must reach the protocol
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: x-upper\r\nConnection: Upgrade\r\n\r\nhello\n")
        data = read_until(sock, b"HELLO\n")
        assert data == HEAD + b"HELLO\n"  # the app sent no HTTP response of its own
        assert closed.wait(10)  # the app's iterable ended and was closed
        assert wait_for(lambda: server.call(lambda: len(server.server.connections)) == 0)
        time.sleep(0.6)  # past the keep-alive and head timeouts: not the server's any more
        sock.sendall(b"again\n")
        assert read_until(sock, b"AGAIN\n") == b"AGAIN\n"
        sock.sendall(b"quit\n")
        assert read_until(sock, b"never") == b""  # closed by the protocol
    finally:
        sock.close()
    # the server is fine for plain requests
    from conftest import raw_exchange

    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").endswith(b"ok")


def test_access_line_at_the_hand_over(serve, access_lines) -> None:  # noqa: F811
    closed = threading.Event()
    server = serve(make_app(closed), access_log=True, access_log_format="%(r)s %(s)s")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"GET /t HTTP/1.1\r\nHost: t\r\nUpgrade: x-upper\r\nConnection: Upgrade\r\n\r\n")
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 101")
        assert wait_for(lambda: any(line.startswith("GET /t ") for line in access_lines))
        assert [line for line in access_lines if "/t " in line] == ["GET /t HTTP/1.1 101"]
    finally:
        sock.close()


from test_accesslog import access_lines  # noqa: E402, F401 (a fixture)
