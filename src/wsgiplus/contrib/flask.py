"""Flask views that suspend on futures.

What Flask 3.1 needs, found with the real framework on WSGI+:

* Nothing for the server: a view returning ``Response(stream_with_context(gen()))``
  whose generator yields futures works as is - werkzeug passes non-str body
  items through untouched, and WSGI+ runs every step of a request in that
  request's own ``contextvars.Context``, so the request/app contexts that
  ``stream_with_context`` pushes (in contextvars) are intact after a resume on
  any thread: ``request``, ``g`` and ``current_app`` stay right with a hundred
  requests suspended on two threads (tests/test_flask_suspend.py).
* ``stream_with_context`` itself is needed, as for any streamed Flask body
  that touches ``request``: without it the generator runs after the context
  was popped.
* Flask's test client (and any plain WSGI server) does not suspend: it would
  put the future in the body. ``portable_app(app)`` wraps ``app.wsgi_app`` with
  ``wsgiplus.compat.portable``, so there the futures are waited for in place.

This module adds the short spelling of that:

    @app.get("/price")
    @suspending(mimetype="application/json")
    def price():
        fut = bridge.run(fetch_price(request.args["sku"]))
        yield fut
        yield json.dumps({"price": fut.result()})
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, stream_with_context

from ..compat import portable

__all__ = ["portable_app", "suspending"]


def suspending(
    view: Callable[..., Iterator[Any]] | None = None, /, **response_kwargs: Any
) -> Any:
    """Decorator for a view written as a generator that yields futures and body chunks.

    The view's generator runs inside the request context (``stream_with_context``);
    ``response_kwargs`` (``status``, ``mimetype``, ``headers``...) go to ``Response``,
    since the head is fixed before the body starts.
    """

    def decorate(view: Callable[..., Iterator[Any]]) -> Callable[..., Response]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            return Response(stream_with_context(view(*args, **kwargs)), **response_kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate


def portable_app(app: Flask) -> Flask:
    """Make ``app`` correct (blocking) where the server does not suspend: test client, wsgiref..."""
    app.wsgi_app = portable(app.wsgi_app)  # type: ignore[method-assign]
    return app
