"""The same WebSocket app (examples/ws_echo.py) on gunicorn, werkzeug and WSGI+.

``wsgiplus.compat_ws.portable_websocket`` gives it a blocking socket on the raw
connection where WSGI+ is not there; the app's code is the same.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from test_portability import server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent


def exercise(port: int) -> None:
    for _ in range(2):
        with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10) as ws:
            ws.send("héllo")
            assert ws.recv(timeout=10) == "héllo"
            ws.send(b"\x00" * 70_000)
            assert ws.recv(timeout=10) == b"\x00" * 70_000
            ws.close(4000, "done")
        assert ws.close_code == 4000


@pytest.mark.parametrize("kind", ["gunicorn-gthread", "gunicorn-sync", "wsgiplus"])
def test_ws_echo_example_everywhere(kind: str) -> None:
    with server(kind, "examples.ws_echo:app", {}) as port:
        exercise(port)


def test_ws_echo_on_werkzeug_dev_server() -> None:
    from werkzeug.serving import make_server

    sys.path.insert(0, str(ROOT))
    from examples.ws_echo import app

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        exercise(srv.server_port)
    finally:
        srv.shutdown()
        thread.join(10)


def test_app_error_on_a_plain_server_closes_1011() -> None:
    from werkzeug.serving import make_server

    from wsgiplus.compat_ws import portable_websocket

    @portable_websocket
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        ws = environ["wsgiplus.websocket"].accept()
        fut = ws.receive()
        yield fut
        raise RuntimeError("boom")

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(f"ws://127.0.0.1:{srv.server_port}/", open_timeout=10) as ws:
            ws.send("x")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd.code == 1011
    finally:
        srv.shutdown()
        thread.join(10)
