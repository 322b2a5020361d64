"""Flask routes whose WebSockets hold no thread while they wait.

    from wsgiplus.contrib.flask_ws import WebSockets

    sockets = WebSockets(app)

    @sockets.route("/echo")
    def echo(ws):                      # a generator: yield the socket's futures
        while True:
            fut = ws.receive()
            yield fut
            message = fut.result()
            if message is None:        # closed
                return
            yield ws.send(message)

The view gets the ``WebSocket`` of ``environ["wsgiplus.websocket"]`` (see
docs/spec.md, "WebSockets") after the handshake was accepted, with the URL's
variables as keyword arguments. It runs inside the request context
(``stream_with_context``), so ``request``, ``session``, ``g`` and
``current_app`` are there, after every resume, on whatever thread. The rule
is registered with ``websocket=True``, as werkzeug's routing wants: a plain
request to it gets 400, and a WebSocket request to a plain rule gets 400.

On gunicorn or werkzeug's dev server, ``portable_app(app)`` gives the same
views a blocking socket (one thread per socket there):
``wsgiplus.compat_ws.portable_websocket`` around ``app.wsgi_app``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, abort, request, stream_with_context

from ..compat_ws import portable_websocket

__all__ = ["WebSockets", "portable_app"]

View = Callable[..., Iterator[Any]]


class WebSockets:
    """Registers thread-free WebSocket views on a Flask app or blueprint."""

    def __init__(self, app: Flask | Blueprint | None = None) -> None:
        self.app = app

    def route(self, rule: str, *, subprotocols: Iterable[str] = (),
              app: Flask | Blueprint | None = None, **options: Any) -> Callable[[View], View]:
        """``@sockets.route("/chat", subprotocols=["chat.v1"])``: the first subprotocol
        the client offers that is in ``subprotocols`` is accepted (none if no match)."""
        target = app or self.app
        if target is None:
            raise RuntimeError("WebSockets() needs an app or blueprint (here or in route())")
        supported = list(subprotocols)

        def decorate(view: View) -> View:
            @functools.wraps(view)
            def endpoint(**kwargs: Any) -> Response:
                upgrade = request.environ.get("wsgiplus.websocket")
                if upgrade is None:
                    abort(400, "this URL is for WebSockets")
                chosen = next((p for p in upgrade.subprotocols if p in supported), None)
                ws = upgrade.accept(subprotocol=chosen)
                return Response(stream_with_context(view(ws, **kwargs)))

            options.setdefault("methods", ["GET"])
            target.add_url_rule(rule, view_func=endpoint, websocket=True, **options)
            return view

        return decorate


def portable_app(app: Flask) -> Flask:
    """Make the app's WebSocket views work on gunicorn / werkzeug (blocking there)."""
    app.wsgi_app = portable_websocket(app.wsgi_app)  # type: ignore[method-assign]
    return app
