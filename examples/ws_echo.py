"""A WebSocket echo server whose sockets hold no thread while they wait.

    wsgiplus examples.ws_echo:app --threads 2

Any path upgrades to a WebSocket that echoes every message (text stays
text, binary stays binary); a plain GET gets a short text answer. This is
the app the Autobahn|Testsuite run and the 2,000-socket barrier test use.
It also runs on gunicorn (gthread) and werkzeug's dev server, one thread per
socket there, through ``wsgiplus.compat_ws.portable_websocket``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from wsgiplus.compat_ws import portable_websocket


@portable_websocket
def app(environ: dict[str, Any], start_response: Any) -> Any:
    upgrade = environ.get("wsgiplus.websocket")
    if upgrade is None:
        body = b"a WebSocket echo: connect with ws://\n"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return echo(upgrade.accept())


def echo(ws: Any) -> Iterator[Any]:
    while True:
        fut = ws.receive()
        yield fut  # no thread while the client is silent
        message = fut.result()
        if message is None:  # closed: ws.close_code says how
            return
        yield ws.send(message)  # no thread while the client is slow to read
