"""A connection accepted just as a graceful stop begins is answered, not dropped.

The event loop accepts a socket a few callbacks before the protocol's
``connection_made`` runs. A stop that starts in between used to see no
connections, finish at once and exit under the new one: the client got the
connection closed without a response. Under gunicorn with ``--max-requests``
(the old worker stops while the next request arrives on the shared socket)
this made tests/test_gunicorn_worker.py's access-log test fail now and then.

Here the ordering is forced: ``connection_made`` is held back until the
listeners have closed (``is_serving()`` false), then runs.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from conftest import hello_app, read_until_close

from wsgiplus._compiled import compiled
from wsgiplus.server.core import HTTPConnection
from wsgiplus.testing import ServerThread


@pytest.mark.skipif(compiled(), reason="patches HTTPConnection, a compiled class in this build: "
                    "the accept-queue drain it checks is the same code in both builds")
def test_connection_made_during_shutdown_is_answered_then_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerThread(hello_app, threads=1).start()
    original = HTTPConnection.connection_made
    held = threading.Event()

    def late_connection_made(self: HTTPConnection, transport: Any) -> None:
        loop = server.loop
        assert loop is not None
        held.set()
        server.server.request_stop()  # the stop begins while this connection is on its way
        tries = [0]

        def when_listeners_closed() -> None:
            tries[0] += 1
            if any(srv.is_serving() for srv in server.server._servers) and tries[0] < 10_000:
                loop.call_soon(when_listeners_closed)
                return
            original(self, transport)
            if self.transport is not None and not transport.is_closing():
                self.data_received(pending.pop())

        loop.call_soon(when_listeners_closed)

    pending: list[bytes] = [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"]
    monkeypatch.setattr(HTTPConnection, "connection_made", late_connection_made)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert held.wait(10)
            response = read_until_close(sock, timeout=10)
    finally:
        server.stop()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    assert body == b"Hello, world!"
    assert b"connection: close" in head.lower()  # draining: answered, then closed


def test_request_stop_after_the_server_has_stopped_is_a_no_op() -> None:
    # a server that stopped on its own (the case above: its stop began inside the test) may
    # still be asked to stop: ServerThread.stop(), a supervisor's late signal
    server = ServerThread(hello_app, threads=1).start()
    thread = server._thread
    assert thread is not None
    server.server.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert server.server.loop is not None and server.server.loop.is_closed()
    server.server.request_stop()  # no "Event loop is closed" from call_soon_threadsafe
    server.stop()
