"""Shared test helpers: real servers on loopback, raw sockets, bounded waits."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wsgiplus.testing import ServerThread


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    """``serve(app, **config)`` starts a real server on 127.0.0.1:0; stopped after the test."""
    servers: list[ServerThread] = []

    def start(app: Callable[..., Any], **options: Any) -> ServerThread:
        server = ServerThread(app, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or timeout)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_close(sock, timeout)


def read_until_close(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true; bounded. Returns the last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def _get(port: int, path: str, host: str = "127.0.0.1", timeout: float = 30.0) -> tuple[int, bytes]:
    import asyncio

    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def get_many(port: int, paths: list[str], timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """Issue every GET at once, each on its own connection; bounded by ``timeout`` overall."""
    import asyncio

    async def main() -> list[tuple[int, bytes]]:
        return await asyncio.wait_for(asyncio.gather(*(_get(port, p) for p in paths)), timeout)

    return asyncio.run(main())


def dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


class CLIServer:
    """A ``python -m wsgiplus`` subprocess: its port, its log (stderr lines) and the process."""

    def __init__(self, port: int, log: list[str], proc: Any) -> None:
        self.port, self.log, self.proc = port, log, proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def cli_server(args: list[str], cwd: Any, env: dict[str, str] | None = None,
               timeout: float = 30.0) -> Iterator[CLIServer]:
    """Run ``python -m wsgiplus ARGS --bind 127.0.0.1:0`` in its own session, bounded.

    Yields once the server logs its port; its stderr keeps being collected in
    ``log``. Everything the process started is killed afterwards.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsgiplus", *args, "--bind", "127.0.0.1:0"],
        cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    log: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + timeout
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, "the server did not start:\n" + "".join(log)
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        yield CLIServer(port, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # anything it started goes too
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
