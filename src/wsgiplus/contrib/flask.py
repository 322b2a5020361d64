"""Flask views that suspend on futures, and ``async def`` views that hold no thread.

Three ways, from the most to the least Flask-like:

* ``async def`` views, with the extension installed - nothing else changes::

      app = Flask(__name__)
      WSGIPlus(app)

      @app.get("/item/<id>")
      async def item(id):
          r = await client.get(f"/items/{id}")      # httpx.AsyncClient, on the bridge loop
          if r.status_code == 404:
              abort(404)                            # your error handlers run
          return jsonify(r.json()), 200, {"X-Upstream": str(r.status_code)}

  Under WSGI+ the view's coroutine runs on the bridge loop and the request is
  suspended meanwhile: no thread is held while it awaits. Everything after it
  - ``make_response``, error handlers, ``after_request`` hooks, the session,
  ``request_finished``, ``teardown_request`` - runs when it is done, in the
  request context, on whichever pool thread resumes the request.

* ``@suspending_view``: a plain ``def`` view written as a generator that
  yields futures and then *returns* an ordinary Flask response value (also
  needs the extension to suspend; without it, or on other servers, it waits in
  place)::

      @app.get("/price/<sku>")
      @suspending_view
      def price(sku):
          fut = bridge.run(client.get(f"/prices/{sku}"))
          yield fut
          r = fut.result()
          if r.status_code != 200:
              return jsonify(error="upstream"), 502
          return jsonify(r.json())

* ``@suspending(mimetype=...)``: the body is a generator that yields futures
  and chunks, wrapped in ``stream_with_context``; status and headers are fixed
  before it starts (no extension needed).

How the extension hooks Flask (3.x), by overriding three methods on the app
object, each of which Flask calls through ``self``:

* ``ensure_sync`` - what Flask calls for every view, hook, error handler and
  signal receiver; Flask's own wraps an ``async def`` in asgiref's
  ``async_to_sync``, which blocks the thread for the coroutine's whole run.
  Ours, for the *view* of a request served by WSGI+, returns a placeholder
  response instead of a result. For everything else (async
  ``before_request``/``after_request`` hooks, error handlers, and every
  coroutine on other servers or in the test client) it runs the coroutine on
  the bridge loop and waits: correct, the thread is held, and all the app's
  coroutines share one loop (an ``httpx.AsyncClient`` made on it works in
  all of them).
* ``dispatch_request`` - marks the view call, so ``ensure_sync`` can tell the
  view from the hooks around it.
* ``finalize_request`` - lets the placeholder through untouched; the real
  response is finalized when the view's coroutine is done.

The placeholder is a WSGI callable: Flask's ``wsgi_app`` calls it in the
request context and it returns a body generator that pushes that context once
more (as ``stream_with_context`` does, so Flask's ``pop`` leaves it alive),
yields the coroutine's future to the server, then finalizes the response,
starts it and streams it. The context is popped - ``teardown_request`` runs,
with the error if there was an unhandled one - when the body is closed.

Limits: the *view* suspends; async hooks and error handlers hold the thread
while they run. A decorator around an async view must return what
``ensure_sync(view)(...)`` returned as is (the pattern Flask documents for
extensions); one that transforms it gets a ``RuntimeError`` naming the view.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask, Response, current_app, has_request_context, request, stream_with_context
from flask.globals import request_ctx

from .. import bridge
from ..compat import is_future, is_wsgiplus, portable, wait

__all__ = ["WSGIPlus", "portable_app", "suspending", "suspending_view"]

log = logging.getLogger("wsgiplus.flask")

EXTENSION = "wsgiplus"


class _ViewCall:
    """One call of ``dispatch_request``: the placeholder it produced, if any."""

    __slots__ = ("app", "deferred")

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.deferred: _Deferred | None = None


_view_call: contextvars.ContextVar[_ViewCall | None] = contextvars.ContextVar(
    "wsgiplus_flask_view_call", default=None
)


class WSGIPlus:
    """Flask extension: ``async def`` views and ``@suspending_view`` views suspend under WSGI+.

    ``WSGIPlus(app)`` or ``ext = WSGIPlus(); ext.init_app(app)``. On any other
    server (and in the test client) the app works as before, each coroutine
    waited for on the bridge loop.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION in app.extensions:
            return
        app.extensions[EXTENSION] = self
        flask_ensure_sync = app.ensure_sync
        flask_dispatch = app.dispatch_request
        flask_finalize = app.finalize_request

        def ensure_sync(func: Callable[..., Any]) -> Callable[..., Any]:
            if not iscoroutinefunction(func):
                return func
            if _on_bridge_loop():  # blocking on the bridge from its own loop would deadlock
                return flask_ensure_sync(func)

            @functools.wraps(func)
            def run(*args: Any, **kwargs: Any) -> Any:
                call = _view_call.get()
                if (call is not None and call.app is app and call.deferred is None
                        and has_request_context() and is_wsgiplus(request.environ)):
                    call.deferred = _Deferred(app, func, args, kwargs, None)
                    return call.deferred
                return bridge.run(func(*args, **kwargs)).result()

            return run

        def dispatch_request() -> Any:
            call = _ViewCall(app)
            token = _view_call.set(call)
            try:
                rv = flask_dispatch()
            finally:
                _view_call.reset(token)
            deferred = call.deferred
            if deferred is not None and rv is not deferred:
                deferred.discard()
                raise RuntimeError(
                    f"the async function {deferred.name} was run through ensure_sync() in view "
                    f"{request.endpoint!r}, whose return value did not pass on what it returned: "
                    "under WSGI+ that is a placeholder for the suspended coroutine. A decorator "
                    "around an async view must return ensure_sync(view)(...) unchanged."
                )
            return rv

        def finalize_request(rv: Any, from_error_handler: bool = False) -> Any:
            if isinstance(rv, _Deferred):
                return rv  # finalized when the coroutine is done
            return flask_finalize(rv, from_error_handler)

        app.ensure_sync = ensure_sync  # type: ignore[method-assign]
        app.dispatch_request = dispatch_request  # type: ignore[method-assign]
        app.finalize_request = finalize_request  # type: ignore[method-assign]


def _on_bridge_loop() -> bool:
    if not bridge.default.running:
        return False
    thread = bridge.default._thread
    return thread is not None and thread is threading.current_thread()


class _Deferred:
    """The response of a suspended view: a WSGI callable Flask's ``wsgi_app`` calls as usual."""

    __slots__ = ("app", "func", "args", "kwargs", "gen", "name")

    def __init__(self, app: Flask, func: Callable[..., Any] | None, args: tuple[Any, ...],
                 kwargs: dict[str, Any], gen: Iterator[Any] | None) -> None:
        self.app = app
        self.func, self.args, self.kwargs, self.gen = func, args, kwargs, gen
        self.name = getattr(func, "__qualname__", None) or getattr(gen, "__qualname__", "view")

    def discard(self) -> None:
        if self.gen is not None:
            self.gen.close()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[Any]:
        body = self._body(request_ctx._get_current_object(), environ, start_response)
        next(body)  # pushes the request context once more before Flask pops its own level
        return body

    def _view(self) -> Iterator[Any]:
        """Yields the futures the view waits on; returns the view's return value."""
        if self.func is not None:
            fut = bridge.run(self.func(*self.args, **self.kwargs))
            try:
                yield fut
            except BaseException:
                fut.cancel()
                raise
            return fut.result()
        gen = self.gen
        assert gen is not None
        try:
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    return stop.value
                if not is_future(item):
                    raise TypeError(
                        f"a @suspending_view generator yielded {type(item).__name__}: it yields "
                        "futures only, then returns the response"
                    )
                yield item
        finally:
            gen.close()

    def _body(self, ctx: Any, environ: dict[str, Any],
              start_response: Callable[..., Any]) -> Iterator[Any]:
        app = self.app
        error: BaseException | None = None
        ctx.push()
        try:
            yield None  # primed by __call__
            try:
                try:
                    rv = yield from self._view()
                except Exception as exc:
                    rv = app.handle_user_exception(exc)
                response = app.finalize_request(rv)
            except Exception as exc:  # as Flask's wsgi_app: the 500 handler, logged
                error = exc
                response = app.handle_exception(exc)
            app_iter = response(environ, start_response)
            try:
                # not ``yield from``: it would close app_iter on GeneratorExit, and again below
                for item in app_iter:  # noqa: UP028
                    yield item
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            error = exc
            raise
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)


def suspending_view(view: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    """A view written as a generator that yields futures and then returns a Flask response value.

    Whatever a view may return (a ``Response``, a ``(body, status, headers)``
    tuple, a dict...) can be returned after the suspensions; ``abort()`` and
    exceptions go to the app's error handlers; ``after_request`` hooks see the
    real response. Suspends under WSGI+ with ``WSGIPlus(app)`` installed;
    elsewhere each future is waited for in place.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = view(*args, **kwargs)
        call = _view_call.get()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if call is not None and call.app is app and call.deferred is None:
            if is_wsgiplus(request.environ):
                call.deferred = _Deferred(app, None, (), {}, gen)
                return call.deferred
        elif is_wsgiplus(request.environ) and EXTENSION not in app.extensions:
            _warn_no_extension(app)
        return _wait_in_place(gen)

    return wrapper


_warned: set[int] = set()


def _warn_no_extension(app: Flask) -> None:
    if id(app) not in _warned:
        _warned.add(id(app))
        log.warning("@suspending_view in app %r without WSGIPlus(app): its futures are waited "
                    "for in place, holding the thread", app.name)


def _wait_in_place(gen: Iterator[Any]) -> Any:
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            if not is_future(item):
                raise TypeError(f"a @suspending_view generator yielded {type(item).__name__}")
            wait(item)
    finally:
        gen.close()


def suspending(
    view: Callable[..., Iterator[Any]] | None = None, /, **response_kwargs: Any
) -> Any:
    """Decorator for a view written as a generator that yields futures and body chunks.

    The view's generator runs inside the request context (``stream_with_context``);
    ``response_kwargs`` (``status``, ``mimetype``, ``headers``...) go to ``Response``,
    since the head is fixed before the body starts. To choose the status and
    headers after a suspension, use ``suspending_view`` or an ``async def`` view.
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
