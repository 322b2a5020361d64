"""Writing WSGI middleware that transforms the body without breaking suspension.

Middleware that never touches the body (routing, headers, auth, ProxyFix)
passes futures through as they are. Middleware that does - compressing,
rewriting, counting bytes - must pass two kinds of items through untouched:
futures (``wsgiplus.compat.is_future``), which tell the server to suspend,
and empty bytestrings, which may be ``pause_output`` park points. This module
does that bookkeeping; you write only the transformation:

    class Upper(BodyFilter):
        def chunk(self, data):
            return data.upper()

    app = FilterMiddleware(app, lambda environ: Upper())

For a body-consuming middleware you cannot change (one that joins or
measures every item), put ``wait_in_place`` between it and the app: futures
are then waited for inside the app's thread - correct, but that request holds
its thread while it waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .compat import BlockingBody, WrappedBody, _Pause, is_future

__all__ = ["BodyFilter", "FilterMiddleware", "FilteredBody", "wait_in_place"]

Headers = list[tuple[str, str]]


class BodyFilter:
    """One response's transformation. Override what you need; one instance per response."""

    def start(self, status: str, headers: Headers) -> tuple[str, Headers] | None:
        """Called from ``start_response``: return the (possibly changed) status and headers,
        or ``None`` to leave this response alone (e.g. a content type you do not handle)."""
        return status, headers

    def chunk(self, data: bytes) -> bytes:
        """Transform one non-empty chunk; returning ``b""`` holds it back (e.g. buffering)."""
        return data

    def end(self) -> bytes:
        """Bytes to send after the last chunk (a compressor's flush)."""
        return b""


class FilteredBody(WrappedBody):
    """The app's iterable with ``chunk``/``end`` applied to bytes; futures and ``b""`` pass.

    An object, not a generator, so that ``close()`` reaches the app's iterable
    even when the body was never started (a client gone before the first step).
    """

    def __init__(self, iterable: Iterable[Any], chunk: Callable[[bytes], bytes],
                 end: Callable[[], bytes] | None = None,
                 active: Callable[[], bool] | None = None) -> None:
        super().__init__(iterable)
        self._chunk = chunk
        self._end = end
        self._active = active

    def __iter__(self) -> Iterator[Any]:
        chunk = self._chunk
        active = self._active
        for item in self._iterable:
            if is_future(item) or not item or (active is not None and not active()):
                yield item
                continue
            out = chunk(bytes(item))
            if out:
                yield out
        if self._end is not None and (active is None or active()):
            tail = self._end()
            if tail:
                yield tail


class FilterMiddleware:
    """Apply ``make_filter(environ)``'s ``BodyFilter`` (or none, if it returns ``None``) to responses.

    The filter sees the status and headers when the app calls ``start_response``
    - for a WSGI+ app usually after it resumed, during iteration - and bytes
    sent through the legacy ``write()`` go through it too.
    """

    def __init__(self, app: Callable[..., Iterable[Any]],
                 make_filter: Callable[[dict[str, Any]], BodyFilter | None]) -> None:
        self.app = app
        self.make_filter = make_filter

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[Any]:
        filt = self.make_filter(environ)
        if filt is None:
            return self.app(environ, start_response)
        state = {"active": False}

        def filtered_start_response(status: str, headers: Headers, exc_info: Any = None) -> Any:
            decided = filt.start(status, headers)
            state["active"] = decided is not None
            if decided is not None:
                status, headers = decided
            write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            def filtered_write(data: bytes) -> None:
                out = filt.chunk(data) if state["active"] and data else data
                if out:
                    write(out)

            return filtered_write

        return FilteredBody(self.app(environ, filtered_start_response), filt.chunk, filt.end,
                            lambda: state["active"])


def wait_in_place(app: Callable[..., Iterable[Any]]) -> Callable[..., Iterable[Any]]:
    """Wrap an app so its futures are waited for in its thread: for inside body-consuming middleware."""

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[Any]:
        # pause_output must block here too: the server never sees the b"" it would park on
        pause = _Pause()
        environ["wsgi.pause_output"] = environ["wsgiplus.pause_output"] = pause.pause_output
        return BlockingBody(app(environ, start_response), pause)

    return wrapper
