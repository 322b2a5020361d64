"""Run a WSGI+ app on any WSGI server: wait for yielded futures in place, drop them from the body.

    from wsgiplus.compat import portable

    @portable
    def app(environ, start_response):
        fut = bridge.run(fetch())
        yield fut
        ...

Under WSGI+ (``environ['wsgiplus.version']`` present) the wrapper steps aside
and the server suspends the request without a thread. Under wsgiref,
waitress, gunicorn sync/gthread and the like, the wrapper blocks the worker
thread until each future is done - correct, just not cheap - so one code base
serves both. It also supplies what WSGI+ would have put in the environ:
``wsgi.pause_output`` / ``wsgiplus.pause_output`` (the next ``b""`` after a
pause blocks until ``resume()``) and ``wsgiplus.client_disconnected`` (always
False: a plain server cannot tell). For the same reason a request parked on
``pause_output`` there keeps its thread until ``resume()``, even if its client
has gone: give such waits a bound (``timeout=``) on plain servers.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["BlockingBody", "is_future", "is_wsgiplus", "portable", "wait"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[Any]]


def is_wsgiplus(environ: dict[str, Any]) -> bool:
    """True when the server suspends on yielded futures itself."""
    return "wsgiplus.version" in environ


def is_future(item: object) -> bool:
    """The WSGI+ test for a body item that means "suspend until I am done"."""
    return not isinstance(item, (bytes, bytearray, memoryview)) and hasattr(item, "add_done_callback")


def wait(fut: Any, timeout: float | None = None) -> None:
    """Block this thread until ``fut`` (any future-like object) is done.

    Only ``add_done_callback`` is relied on; an ``asyncio.Future`` gets its
    callback on its own loop, since asyncio futures are not thread-safe.
    """
    done = getattr(fut, "done", None)
    if done is not None and done():
        return
    event = threading.Event()

    def callback(_: Any) -> None:
        event.set()

    if isinstance(fut, asyncio.Future):
        fut.get_loop().call_soon_threadsafe(fut.add_done_callback, callback)
    else:
        fut.add_done_callback(callback)
    if not event.wait(timeout):
        raise TimeoutError(f"{fut!r} not done after {timeout}s")


class _Pause:
    """``pause_output`` for a plain server: ``b""`` after a pause blocks until resumed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event: threading.Event | None = None

    def pause_output(self) -> Callable[[], None]:
        event = threading.Event()
        with self._lock:
            self._event = event

        def resume() -> None:
            event.set()

        return resume

    def wait_if_paused(self, timeout: float | None = None) -> None:
        with self._lock:
            event, self._event = self._event, None
        if event is not None and not event.wait(timeout):
            raise TimeoutError(f"pause_output not resumed after {timeout}s")


class WrappedBody:
    """Base of body wrappers: ``close()`` reaches the wrapped iterable once, even unstarted."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()


class BlockingBody(WrappedBody):
    """The app's iterable with futures waited for and removed; ``close()`` passed on once."""

    def __init__(self, iterable: Iterable[Any], pause: _Pause | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(iterable)
        self._pause = pause
        self._timeout = timeout

    def __iter__(self) -> Iterator[bytes]:
        pause = self._pause
        for item in self._iterable:
            if is_future(item):
                wait(item, self._timeout)
                continue
            if not item:
                if pause is not None:
                    pause.wait_if_paused(self._timeout)
                continue  # an empty string never needs to reach a plain server
            yield item



def portable(app: WSGIApp | None = None, *, timeout: float | None = None) -> Any:
    """Decorator (bare or with ``timeout=``): make a WSGI+ app correct on any WSGI server.

    ``timeout`` bounds each blocking wait on a plain server (``TimeoutError``
    then, which the server reports as an error); WSGI+ has its own deadline.
    """

    def decorate(app: WSGIApp) -> WSGIApp:
        @functools.wraps(app)
        def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[Any]:
            if is_wsgiplus(environ):
                return app(environ, start_response)
            pause = None
            if "wsgi.pause_output" not in environ:
                pause = _Pause()
                environ["wsgi.pause_output"] = environ["wsgiplus.pause_output"] = pause.pause_output
            environ.setdefault("wsgiplus.client_disconnected", _never)
            return BlockingBody(app(environ, start_response), pause, timeout)

        return wrapper

    return decorate(app) if app is not None else decorate


def _never() -> bool:
    return False
