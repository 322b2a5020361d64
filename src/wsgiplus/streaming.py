"""Streaming, non-blocking request input (opt-in): the app reads the body as it arrives.

    from wsgiplus.streaming import streaming_input

    @streaming_input                       # or streaming_input(when=lambda environ: ...)
    def app(environ, start_response):
        inp = environ["wsgiplus.input"]
        with open("/tmp/upload", "wb") as out:
            while True:
                fut = inp.receive()        # a future: no thread while the client is slow
                yield fut
                chunk = fut.result()
                if not chunk:              # b"": the body is complete
                    break
                out.write(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"stored"

By default WSGI+ reads the whole body on the loop before it calls the app.
An app marked with ``streaming_input`` is called as soon as the request head
has arrived (``when(environ)``, if given, decides per request: it sees the
head only, runs on the event loop, and must be cheap and never block). Then:

- ``environ["wsgiplus.input"].receive(max_bytes=65536)`` returns a future of the
  next bytes of the body (at most ``max_bytes``; ``b""`` at its end). It is done
  at once when bytes are waiting; otherwise the request suspends, holding no
  thread, until the client sends more.
- ``environ["wsgi.input"]`` still works for code that does not know about
  futures (``read(n)``, ``read()``, ``readline()``, iteration): it **blocks its
  thread** until the bytes arrive.
- ``Expect: 100-continue`` is answered on the first read of either kind (an app
  that answers without reading never makes the client send the body).
- The server keeps at most ``body_stream_buffer`` (256 KiB) unread: past it, it
  stops reading the socket, so TCP pushes back on the client, until the app reads.
  The body timeout does not run while the server is the one not reading.
- ``max_body_size`` is enforced as bytes arrive (413 if the response has not
  started, else the connection is cut); a malformed or timed-out body is 400 / 408
  the same way. A read after such an error raises ``BodyError``.
- A response that ends before the body was read to the end closes the
  connection (the rest of the body is never parsed as a next request).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .runner.futures import Future

__all__ = ["BodyError", "StreamingBody", "streaming_input"]

BUFFER_HIGH = 256 * 1024
BUFFER_LOW = 64 * 1024


class BodyError(IOError):
    """The request body cannot be read: too large, malformed, timed out, or the client left."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def streaming_input(app: Any = None, *, when: Callable[[dict[str, Any]], bool] | None = None) -> Any:
    """Mark a WSGI app (bare, or with ``when=``) to be called at the request head."""

    def decorate(app: Any) -> Any:
        try:
            app.wsgiplus_streaming_input = when or True
        except AttributeError:  # a bound method or a C callable: wrap it
            inner = app

            def app(environ: dict[str, Any], start_response: Any) -> Any:
                return inner(environ, start_response)

            app.wsgiplus_streaming_input = when or True  # type: ignore[attr-defined]
        return app

    return decorate(app) if app is not None else decorate


class StreamingBody:
    """One request body, fed on the loop and read by the app (blocking or by futures).

    Loop side: ``write(data)``, ``finish()``, ``fail(status, reason)``. The
    connection passes ``pause(paused)`` (stop/resume reading the socket) and
    ``want_continue()`` (send ``100 Continue``); both are called on the loop.
    App side (any thread): ``receive()`` and the file-like ``read`` family.
    """

    def __init__(self, loop: Any, pause: Callable[[bool], None],
                 want_continue: Callable[[], None] | None = None, high: int = BUFFER_HIGH) -> None:
        self._loop = loop
        self._pause = pause
        self._want_continue = want_continue
        self._high = high
        self._low = min(BUFFER_LOW, high // 4)
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None  # made when a thread blocks
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiters: list[tuple[Future[bytes], int]] = []
        self._ended = False
        self._error: BodyError | None = None
        self._paused = False  # loop-owned: reading stopped because of us
        self._asked = False  # 100-continue requested
        # for the connection's body timer (as BodyBuffer)
        import time

        self.started = time.monotonic()
        self.counted = 0
        self.size = 0

    # -- loop thread -----------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def restart_clock(self) -> None:
        import time

        self.started = time.monotonic()
        self.counted = self.size

    def write(self, data: bytes) -> None:
        self.size += len(data)
        ready: list[tuple[Future[bytes], bytes]] = []
        with self._lock:
            self._chunks.append(data)
            self._buffered += len(data)
            self._serve_waiters(ready)
            over = self._buffered > self._high
            cond = self._cond
            if cond is not None:
                cond.notify_all()
        for fut, chunk in ready:
            fut.set_result(chunk)
        if over and not self._paused:
            self._paused = True
            self._pause(True)

    def finish(self) -> None:
        self._end(None)

    def fail(self, status: int, reason: str) -> None:
        self._end(BodyError(status, reason))

    @property
    def ended(self) -> bool:
        return self._ended

    def _end(self, error: BodyError | None) -> None:
        ready: list[tuple[Future[bytes], bytes]] = []
        failed: list[Future[bytes]] = []
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._error = error
            self._serve_waiters(ready)
            if error is not None:
                failed = [fut for fut, _ in self._waiters]
            else:
                ready += [(fut, b"") for fut, _ in self._waiters]
            self._waiters = []
            cond = self._cond
            if cond is not None:
                cond.notify_all()
        for fut, chunk in ready:
            fut.set_result(chunk)
        for fut in failed:
            fut.set_exception(error)  # type: ignore[arg-type]
        if self._paused:
            self._paused = False
            self._pause(False)

    def _serve_waiters(self, ready: list[tuple[Future[bytes], bytes]]) -> None:
        """Lock held: hand waiting bytes to waiting futures."""
        while self._waiters and self._chunks:
            fut, size = self._waiters.pop(0)
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled (the request was stopped)
            ready.append((fut, self._take(size)))

    def _resume_if_drained(self) -> None:
        if self._paused and self._buffered <= self._low:
            self._paused = False
            self._pause(False)

    # -- any thread --------------------------------------------------------------

    def _take(self, size: int) -> bytes:
        """Lock held, data buffered: up to ``size`` bytes off the front."""
        chunks = self._chunks
        first = chunks.popleft()
        if size >= 0 and len(first) > size:
            chunks.appendleft(first[size:])
            first = first[:size]
        self._buffered -= len(first)
        if self._paused and self._buffered <= self._low:
            self._call_loop(self._resume_if_drained)
        return first

    def _call_loop(self, fn: Callable[[], None]) -> None:
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop has closed
            pass

    def _ask_once(self) -> None:
        if not self._asked:
            self._asked = True
            if self._want_continue is not None:
                self._call_loop(self._want_continue)

    def receive(self, max_bytes: int = 65536) -> Future[bytes]:
        """A future of the next bytes (at most ``max_bytes``); ``b""`` once the body is complete."""
        self._ask_once()
        fut: Future[bytes] = Future()
        with self._lock:
            if self._chunks:
                fut.set_result(self._take(max_bytes))
            elif self._ended:
                if self._error is not None:
                    fut.set_exception(self._error)
                else:
                    fut.set_result(b"")
            else:
                self._waiters.append((fut, max_bytes))
        return fut

    def _wait(self) -> None:
        """Lock held: block until bytes or the end arrive."""
        self._ask_once()
        cond = self._cond
        if cond is None:
            cond = self._cond = threading.Condition(self._lock)
        while not self._chunks and not self._ended:
            cond.wait()

    def read(self, size: int | None = -1) -> bytes:
        """Blocking (holds the thread): ``size`` bytes, fewer at the end; all of it for -1."""
        if size is None:
            size = -1
        out: list[bytes] = []
        got = 0
        with self._lock:
            while size < 0 or got < size:
                self._wait()
                if not self._chunks:
                    break
                chunk = self._take(-1 if size < 0 else size - got)
                out.append(chunk)
                got += len(chunk)
            if not self._chunks and self._ended and self._error is not None and got == 0 and size != 0:
                raise self._error
        return b"".join(out)

    def readline(self, limit: int | None = -1) -> bytes:
        if limit is None:
            limit = -1
        out = bytearray()
        with self._lock:
            while limit < 0 or len(out) < limit:
                self._wait()
                if not self._chunks:
                    if self._error is not None and not out:
                        raise self._error
                    break
                first = self._chunks[0]
                end = first.find(b"\n") + 1
                want = len(first) if end == 0 else end
                if limit >= 0:
                    want = min(want, limit - len(out))
                out += self._take(want)
                if out.endswith(b"\n"):
                    break
        return bytes(out)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 <= hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        pass
