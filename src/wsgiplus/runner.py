"""Drives one WSGI app iterable to the end, holding a thread only while app code runs.

A *step* runs on a pool thread, inside the request's own ``contextvars.Context``:
it calls the app (first step) and then pulls items from the iterable for as
long as they are bytes. It ends when the app yields a future (suspend), when
the connection's write buffer is over its high-water mark (drain), when the
app yields ``b""`` after ``wsgi.pause_output()`` (pause), or at the end. The
step posts one wake-up to the event loop with its outcome; everything else -
watching the future, timers, disconnects - happens on the loop thread, which
submits the next step when the request can go on.

Body bytes produced in a step go to an outbox that the loop flushes: a chunk
is handed over before the app is asked for the next one (PEP 3333 forbids
holding a block back), but a burst of chunks costs one wake-up, not one each.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .pool import ThreadPool
from .protocol import AppHead, ResponseFramer, build_response, encode_head, error_response
from .wsgi import check_headers, check_status, early_hints_head

log = logging.getLogger("wsgiplus.error")

__all__ = ["Runner", "Sink"]

# step outcomes
_DONE = 0  # response complete
_SUSPEND = 1  # waiting on a future
_DRAIN = 2  # waiting for the write buffer to drain
_PAUSE = 3  # waiting for wsgi.pause_output's resume()
_FAILED = 4  # app error before the head was sent: a 500 is in the outbox
_ABORT = 5  # app error after the head was sent: the response is broken
_STOPPED = 6  # closed early because of a disconnect or the deadline
_HANDED_OVER = 7  # the app raised StopIteration from its call: it spoke on the raw socket

# loop-side states
_PENDING, _RUNNING, _SUSPENDED, _DRAINING, _PAUSED, _CLOSING, _FINISHED = range(7)

OUTBOX_HIGH_WATER = 256 * 1024

# Apps send the same status and headers again and again: validate and encode
# each distinct set once. Bounded; cleared when full.
_HEADS: dict[tuple, AppHead] = {}
_HEADS_MAX = 1024


def app_head(status: str, headers: list[tuple[str, str]]) -> AppHead:
    """Validate and serialise an app's status and headers, from the cache when seen before."""
    key = None
    if type(headers) is list:
        try:
            key = (status, *headers)
            hit = _HEADS.get(key)
        except TypeError:  # unhashable items: let the checks say what is wrong
            key = hit = None
        if hit is not None:
            return hit
    head = encode_head(check_status(status), check_headers(headers))
    if key is not None:
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = head
    return head

# why a request was stopped early, and what the client gets if its head is not sent yet
_STOP_STATUS = {
    "deadline": (504, "the request ran past its deadline"),
    "suspend_timeout": (504, "a suspension ran past its timeout"),
    "overload": (503, "too many suspended requests"),
}


class _TakenFramer(ResponseFramer):
    __slots__ = ()

    def body(self, data: bytes) -> bytes:
        raise RuntimeError("the connection was handed over (WebSocket accept): "
                           "the app may yield futures, not bytes")


class Suspensions:
    """Counts suspended requests (loop thread only) against an optional limit."""

    __slots__ = ("count", "limit", "timeout")

    def __init__(self, limit: int | None = None, timeout: float | None = None) -> None:
        self.count = 0
        self.limit = limit
        self.timeout = timeout  # per suspension, seconds


class Sink(Protocol):
    """What a runner needs from its connection (all called on the loop thread)."""

    write_paused: bool  # also read from pool threads
    disconnected: bool

    def write(self, data: bytes) -> None: ...


class Runner:
    """One request's trip through the app, from ``app(environ, start_response)`` to ``close()``.

    ``on_finished(runner, keep_alive, abort)`` is called once on the loop thread
    when the response is complete (``keep_alive`` says whether the connection
    may carry another request) or must be cut short (``abort``).
    """

    __slots__ = (
        "app",
        "environ",
        "sink",
        "loop",
        "_pool",
        "_affinity",
        "_home",
        "_on_finished",
        "method",
        "http_version",
        "keep_alive",
        "server_header",
        "timeout",
        "suspensions",
        "_suspend_timer",
        "context",
        "state",
        "started_at",
        "status",
        "headers",
        "_app_head",
        "head_sent",
        "framer",
        "_iterable",
        "_iterator",
        "_single_chunk",
        "_eager",
        "_closed",
        "_lock",
        "_out",
        "_out_size",
        "_flush_posted",
        "_stop_reason",
        "_pause_token",
        "_parked",
        "_resume_early",
        "_write_ready",
        "_future",
        "_timer",
    )

    def __init__(
        self,
        app: Callable[..., Iterable[Any]],
        environ: dict[str, Any],
        sink: Sink,
        loop: asyncio.AbstractEventLoop,
        pool: ThreadPool,
        on_finished: Callable[[Runner, bool, bool], None],
        *,
        method: str,
        http_version: str,
        keep_alive: bool,
        server_header: bytes | None = b"wsgiplus",
        timeout: float | None = None,
        suspensions: Suspensions | None = None,
    ) -> None:
        self.app = app
        self.environ = environ
        self.sink = sink
        self.loop = loop
        self._pool = pool
        self._affinity = pool.affinity
        self._home: int | None = None  # the thread that started it, with affinity
        self._on_finished = on_finished
        self.method = method
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.server_header = server_header
        self.timeout = timeout
        self.suspensions = suspensions or Suspensions()
        self._suspend_timer: asyncio.TimerHandle | None = None
        self.context = contextvars.Context()
        self.state = _PENDING
        self.started_at = 0.0
        # app side (pool threads, one at a time)
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self._app_head: AppHead | None = None
        self.head_sent = False
        self.framer: ResponseFramer | None = None
        self._iterable: Iterable[Any] | None = None
        self._iterator: Any = None
        self._single_chunk = False
        self._eager = False
        self._closed = False
        # shared between pool threads and the loop
        self._lock = threading.Lock()
        self._out: list[bytes] | None = None  # made with the first chunk: most waits have none
        self._out_size = 0
        self._flush_posted = False
        self._stop_reason: str | None = None  # "disconnect" or "deadline", set by the loop
        self._pause_token: object | None = None
        self._parked = False
        self._resume_early = False
        self._write_ready: threading.Event | None = None
        # loop side
        self._future: Any = None
        self._timer: asyncio.TimerHandle | None = None
        environ["wsgi.pause_output"] = environ["wsgiplus.pause_output"] = self.pause_output
        environ["wsgi.early_hints"] = self.early_hints

    # -- loop thread -------------------------------------------------------

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._pool.submit_to(self._home, fn, *args)

    def start(self) -> None:
        self.state = _RUNNING
        self.started_at = time.monotonic()
        if self.timeout:
            self._timer = self.loop.call_later(self.timeout, self._on_deadline)
        self._pool.submit(self._run)

    def _after_step(self, outcome: int, arg: Any) -> None:
        self._flush()
        if outcome == _SUSPEND:
            gate = self.suspensions
            if not self._stop_reason and gate.limit is not None and gate.count >= gate.limit:
                log.warning("%d requests already suspended: refusing %s %s", gate.count,
                            self.method, self.environ.get("PATH_INFO"))
                self._stop_reason = "overload"
            if self._stop_reason:
                self._cancel_future(arg)
                self._close_then(self._stop_reason)
                return
            self.state = _SUSPENDED
            gate.count += 1
            if gate.timeout:
                self._suspend_timer = self.loop.call_later(gate.timeout, self._on_suspend_timeout)
            self._watch(arg)
        elif outcome == _DRAIN:
            if self._stop_reason:
                self._close_then(self._stop_reason)
            elif self.sink.write_paused:
                self.state = _DRAINING
            else:
                self._submit(self._run)
        elif outcome == _PAUSE:
            if self._stop_reason:
                self._close_then(self._stop_reason)
            elif self._resume_early:
                self._resume_early = False
                self._submit(self._run)
            else:
                self.state = _PAUSED
        elif outcome == _DONE:
            self._finish(self.framer.keep_alive if self.framer else False, False)
        elif outcome == _FAILED:
            self._finish(False, False)
        elif outcome == _ABORT:
            self._finish(False, True)
        elif outcome == _HANDED_OVER:
            self._finish(False, True)  # send nothing, close, never reuse (gunicorn's rule)
        else:  # _STOPPED
            self._stopped(arg)

    # -- a connection handed over (WebSocket accept) -----------------------

    def take_over(self, status_code: int) -> None:
        """The connection now speaks another protocol: send no HTTP response.

        Called on the app's pool thread by ``accept()`` (or on the loop for a
        refusal); the access log shows ``status_code``.
        """
        self.head_sent = True  # the status the app may still give start_response is never sent
        self.framer = _TakenFramer(status_code, True, False)

    def as_websocket(self, suspensions: Suspensions) -> None:
        """Loop thread: waits now count against ``suspensions`` and no request deadline applies."""
        self.suspensions = suspensions
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop_if_suspended(self, reason: str) -> None:
        """Stop the app if it is parked (on a future that no one may complete now)."""
        if self.state == _SUSPENDED:
            done = getattr(self._future, "done", None)
            if done is not None and done():
                return  # its wake-up is on the way (the socket's receive() gave None)
        if self.state in (_SUSPENDED, _DRAINING, _PAUSED):
            self._stop(reason)

    def _watch(self, fut: Any) -> None:
        """Wake the request when ``fut`` is done, whoever completes it and on whatever thread."""
        self._future = fut
        if isinstance(fut, asyncio.Future):
            floop = fut.get_loop()
            if floop is self.loop:
                fut.add_done_callback(self._on_future_done)
            else:
                floop.call_soon_threadsafe(fut.add_done_callback, self._future_done_threadsafe)
        else:
            fut.add_done_callback(self._future_done_threadsafe)

    def _future_done_threadsafe(self, fut: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._on_future_done, fut)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    def _on_future_done(self, fut: Any) -> None:
        if self.state != _SUSPENDED or self._future is not fut:
            return
        self._future = None
        self._leave_suspension()
        self.state = _RUNNING
        self._submit(self._run)

    def _leave_suspension(self) -> None:
        self.suspensions.count -= 1
        if self._suspend_timer is not None:
            self._suspend_timer.cancel()
            self._suspend_timer = None

    def _on_suspend_timeout(self) -> None:
        self._suspend_timer = None
        log.warning("suspend timeout: %s %s waited on a future past %.3gs", self.method,
                    self.environ.get("PATH_INFO"), self.suspensions.timeout)
        self._stop("suspend_timeout")

    def on_drain(self) -> None:
        """The connection's write buffer went below its low-water mark."""
        if self.state == _DRAINING:
            self.state = _RUNNING
            self._submit(self._run)
        event = self._write_ready
        if event is not None:
            self._write_ready = None
            event.set()

    def _on_resume(self) -> None:
        if self.state == _PAUSED:
            self.state = _RUNNING
            self._submit(self._run)
        elif self.state == _RUNNING:
            self._resume_early = True

    def on_disconnect(self) -> None:
        """The client went away: stop the app, close the iterable, cancel what it waits on."""
        self._stop("disconnect")
        event = self._write_ready
        if event is not None:
            self._write_ready = None
            event.set()

    def _on_deadline(self) -> None:
        self._timer = None
        log.warning("request timeout: %s %s ran past %.3gs", self.method,
                    self.environ.get("PATH_INFO"), self.timeout)
        self._stop("deadline")

    def _stop(self, reason: str) -> None:
        if self.state in (_FINISHED, _CLOSING) or self._stop_reason:
            return
        if self.state == _PENDING:
            self.state = _FINISHED  # the app was never called
            return
        self._stop_reason = reason  # a running step sees it at its next item
        if self.state == _SUSPENDED:
            self._leave_suspension()
        if self.state in (_SUSPENDED, _DRAINING, _PAUSED):
            self._cancel_future(self._future)
            self._future = None
            self._close_then(reason)

    def _close_then(self, reason: str) -> None:
        self.state = _CLOSING
        self._submit(self._run_close, reason)

    def _stopped(self, reason: str) -> None:
        self._flush()
        answer = _STOP_STATUS.get(reason)
        if answer is not None and not self.head_sent and not self.sink.disconnected:
            self.status = f"{answer[0]} {answer[1]}"
            self.sink.write(error_response(*answer))
            self._finish(False, False)
        else:
            self._finish(False, True)

    def _finish(self, keep_alive: bool, abort: bool) -> None:
        if self.state == _FINISHED:
            return
        self.state = _FINISHED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_finished(self, keep_alive, abort)
        self._release()

    def _release(self) -> None:
        """Break the environ <-> runner cycle (the bound methods in the environ) and drop the
        iterable, so a finished request's body and environ are freed by reference counting,
        never left to the cyclic GC."""
        env = self.environ
        for key in ("wsgi.pause_output", "wsgiplus.pause_output", "wsgi.early_hints"):
            env.pop(key, None)
        self._iterable = self._iterator = None

    @staticmethod
    def _cancel_future(fut: Any) -> None:
        if fut is None:
            return
        try:
            if isinstance(fut, asyncio.Future):
                fut.get_loop().call_soon_threadsafe(fut.cancel)
            else:
                fut.cancel()
        except Exception:  # a future-like without cancel, or a closed loop
            log.debug("could not cancel %r", fut, exc_info=True)

    def _flush(self) -> None:
        with self._lock:
            out = self._out
            self._out = None
            self._out_size = 0
            self._flush_posted = False
        if out and not self.sink.disconnected:
            self.sink.write(out[0] if len(out) == 1 else b"".join(out))

    def _check_writable(self) -> None:
        """For the blocking ``write()``: release the app thread once the buffer drains."""
        self._flush()
        event = self._write_ready
        if event is not None and (not self.sink.write_paused or self.sink.disconnected):
            self._write_ready = None
            event.set()

    # -- pool threads -------------------------------------------------------

    def _run(self) -> None:
        if self._home is None and self._affinity:
            self._home = self._pool.current_index()
        outcome, arg = self.context.run(self._step)
        self.loop.call_soon_threadsafe(self._after_step, outcome, arg)

    def _run_close(self, reason: str) -> None:
        self.context.run(self._close_iterable)
        self.loop.call_soon_threadsafe(self._stopped, reason)

    def _step(self) -> tuple[int, Any]:
        try:
            it = self._iterator
            if it is None:
                if self._stop_reason:
                    return _STOPPED, self._stop_reason
                try:
                    result = self.app(self.environ, self._start_response)
                except StopIteration:
                    # gunicorn's convention (Flask-Sock, python-socketio): the app
                    # took environ["gunicorn.socket"] and answered on it itself
                    if "gunicorn.socket" in self.environ:
                        return _HANDED_OVER, None
                    raise
                self._iterable = result
                # A list's items are all there: nothing to wait for between them,
                # so its chunks may go out together at the end of the step.
                self._eager = eager = type(result) in (list, tuple)
                self._single_chunk = eager and len(result) == 1
                it = self._iterator = iter(result)
            else:
                eager = self._eager
            sink = self.sink
            while True:
                if self._stop_reason:
                    self._close_iterable()
                    return _STOPPED, self._stop_reason
                if self._out and not eager and not self._flush_posted:
                    self._post_flush()
                item = next(it)
                if type(item) is bytes or isinstance(item, (bytes, bytearray, memoryview)):
                    if item:
                        self._send(bytes(item) if type(item) is not bytes else item)
                        if self._out_size > OUTBOX_HIGH_WATER or sink.write_paused:
                            return _DRAIN, None
                    elif self._pause_token is not None:
                        with self._lock:
                            park = self._pause_token is not None
                            self._parked = park
                        if park:
                            return _PAUSE, None
                    continue
                if not hasattr(item, "add_done_callback"):
                    raise TypeError(
                        f"the app yielded {type(item).__name__}: WSGI+ body items are bytes "
                        "or futures (objects with add_done_callback)"
                    )
                done = getattr(item, "done", None)
                if done is not None and done():
                    continue  # already complete: no need to give the thread back
                return _SUSPEND, item
        except StopIteration:
            pass
        except BaseException as exc:  # the app's error, reported like any server does
            return self._app_error(exc)
        try:
            self._end_body()
        except BaseException as exc:
            return self._app_error(exc)
        self._close_iterable()
        return _DONE, None

    def _start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self._app_head = app_head(status, headers)
        self.status = status
        self.headers = headers
        return self._write

    def _write(self, data: bytes) -> None:
        """PEP 3333's legacy ``write()``: sends now and blocks while the client is slow."""
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self._stop_reason == "disconnect":
            raise ConnectionResetError("client disconnected")
        if not data:
            return
        self._send(data)
        if self._out_size > OUTBOX_HIGH_WATER or self.sink.write_paused:
            event = threading.Event()
            self._write_ready = event
            self.loop.call_soon_threadsafe(self._check_writable)
            event.wait()
            if self._stop_reason == "disconnect":
                raise ConnectionResetError("client disconnected")
        else:
            self._post_flush()

    def _send(self, data: bytes) -> None:
        if self.head_sent:
            self._push(self.framer.body(data))
        else:
            head = self._head(len(data) if self._single_chunk else None)
            self._push(head + self.framer.body(data))

    def _end_body(self) -> None:
        if self.head_sent:
            self._push(self.framer.end())
        else:
            head = self._head(None if self.method == "HEAD" else 0)
            self._push(head + self.framer.end())
        mismatch = self.framer.length_mismatch()
        if mismatch:
            log.warning("response body of %s %s was %s", self.method, self.environ.get("PATH_INFO"), mismatch)

    def _head(self, known_length: int | None) -> bytes:
        """Serialise the head from the app's status and headers (once, with the first bytes)."""
        if self.status is None:
            raise AssertionError("the app sent a body (or returned) before calling start_response")
        head, self.framer = build_response(
            self.method,
            self.http_version,
            self.keep_alive,
            self._app_head,
            None,
            self.server_header,
            known_length,
        )
        self.head_sent = True
        return head

    def _push(self, chunk: bytes) -> None:
        if chunk:
            with self._lock:
                out = self._out
                if out is None:
                    self._out = [chunk]
                else:
                    out.append(chunk)
                self._out_size += len(chunk)

    def _post_flush(self) -> None:
        with self._lock:
            if self._flush_posted or not self._out:
                return
            self._flush_posted = True
        self.loop.call_soon_threadsafe(self._flush)

    def _app_error(self, exc: BaseException) -> tuple[int, Any]:
        env = self.environ
        log.error(
            "Error in app for %s %s%s",
            self.method,
            env.get("SCRIPT_NAME", ""),
            env.get("PATH_INFO", ""),
            exc_info=exc,
        )
        self._close_iterable()
        if self.head_sent:
            return _ABORT, None
        self.status = "500 Internal Server Error"
        self._push(error_response(500))
        return _FAILED, None

    def _close_iterable(self) -> None:
        """Call the iterable's ``close()`` exactly once, whatever ended the request."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterable, "close", None)
        if close is not None:
            try:
                close()
            except BaseException:
                log.exception("Error closing the app iterable for %s %s", self.method,
                              self.environ.get("PATH_INFO", ""))

    def early_hints(self, headers: list[tuple[str, str]]) -> None:
        """``wsgi.early_hints(headers)`` (as gunicorn): send a ``103 Early Hints`` now.

        Before the response head only, and to HTTP/1.1 clients only (ignored
        otherwise, as gunicorn does); bad headers raise like ``start_response``'s.
        """
        head = early_hints_head(headers)
        if self.head_sent or self.http_version != "1.1" or self._stop_reason:
            return
        self._push(head)
        self._post_flush()

    def pause_output(self) -> Callable[[], None]:
        """``wsgi.pause_output()``: the next ``b""`` the app yields parks the request
        until the returned ``resume()`` is called, from any thread."""
        token = object()
        with self._lock:
            self._pause_token = token

        def resume() -> None:
            with self._lock:
                if self._pause_token is not token:
                    return
                self._pause_token = None
                parked = self._parked
                self._parked = False
            if parked:
                try:
                    self.loop.call_soon_threadsafe(self._on_resume)
                except RuntimeError:
                    pass

        return resume
