"""Django views whose WebSockets hold no thread while they wait.

    from wsgiplus.contrib.django_ws import websocket_view

    @websocket_view(subprotocols=["chat.v1"])
    def echo(request, ws):             # a generator: yield the socket's futures
        while True:
            fut = ws.receive()
            yield fut
            message = fut.result()
            if message is None:
                return
            yield ws.send(message)

    urlpatterns = [path("ws/echo", echo)]

The view is called with the request and the accepted ``WebSocket`` (docs/spec.md,
"WebSockets"), plus the URL's arguments. Its generator runs as the body of a
``wsgiplus.contrib.django.SuspendingResponse``, so each step has the request's
own database connections (``atomic=False`` by default: a socket lives far
longer than a transaction should). A request that is not a WebSocket upgrade
(or not on WSGI+, without ``portable_websocket``) gets 400.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from .django import SuspendingResponse

__all__ = ["websocket_view"]

View = Callable[..., Iterator[Any]]


def websocket_view(view: View | None = None, /, *, subprotocols: Iterable[str] = (),
                   atomic: bool = False) -> Any:
    """Decorator (bare or with options) for a generator view ``(request, ws, ...)``."""
    supported = list(subprotocols)

    def decorate(view: View) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            upgrade = request.META.get("wsgiplus.websocket")
            if upgrade is None:
                return HttpResponseBadRequest("this URL is for WebSockets")
            chosen = next((p for p in upgrade.subprotocols if p in supported), None)
            ws = upgrade.accept(subprotocol=chosen)
            return SuspendingResponse(view(request, ws, *args, **kwargs), atomic=atomic)

        return wrapper

    return decorate(view) if view is not None else decorate
