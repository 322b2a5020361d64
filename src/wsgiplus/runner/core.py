"""Drives one WSGI app iterable to the end, holding a thread only while app code runs.

A *step* runs on a pool thread, inside the request's own ``contextvars.Context``:
it calls the app (first step) and then pulls items from the iterable for as
long as they are bytes. It ends when the app yields a future (suspend), when
the stream is not writable (drain), when the app yields ``b""`` after
``wsgi.pause_output()`` (pause), or at the end. The step posts one wake-up to
the event loop with its outcome; everything else - watching the future,
timers, disconnects - happens on the loop thread, which submits the next step
when the request can go on.

The runner knows nothing of HTTP/1.1 or HTTP/2: it talks to its exchange
through a ``streams.Stream`` (``start`` / ``data`` / ``end`` from the step,
``flush`` / ``complete`` / ``error`` / ``abort`` from the loop). The stream
frames, writes error pages and decides keep-alive. Body bytes a step produces
go to the stream's outbox; a chunk is handed to the loop before the app is
asked for the next one (PEP 3333 forbids holding a block back), but a burst of
chunks costs one wake-up, not one each.

States and the transitions between them are written once, in ``_TRANSITIONS``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Any

from ..server.streams import NO_ENVIRON, OUTBOX_HIGH_WATER, ResponseHead, Stream
from .errors import IllegalTransition
from .pool import Pool
from .wsgi import FileWrapper, check_headers, check_status

log = logging.getLogger("wsgiplus.error")

__all__ = ["IllegalTransition", "OUTBOX_HIGH_WATER", "Runner", "State", "Suspensions", "app_head"]

# step outcomes (pool thread -> loop)
_DONE = 0  # response complete
_SUSPEND = 1  # waiting on a future
_DRAIN = 2  # waiting for the stream to be writable
_PAUSE = 3  # waiting for wsgi.pause_output's resume()
_FAILED = 4  # app error before the head was sent: the stream answers 500
_ABORT = 5  # app error after the head was sent: the response is broken
_STOPPED = 6  # closed early because of a disconnect or the deadline
_HANDED_OVER = 7  # the app raised StopIteration from its call: it answered on the raw socket


class State(IntEnum):
    """Where a runner is; changed only on the loop thread, only through ``Runner._to``."""

    PENDING = 0  # made; the app has not been called
    RUNNING = 1  # a step is queued or running on the pool
    SUSPENDED = 2  # parked: waiting on a future the app yielded
    DRAINING = 3  # parked: waiting for the stream to be writable
    PAUSED = 4  # parked: waiting for pause_output's resume()
    READING = 5  # parked: waiting for request input (reserved for streaming wsgi.input)
    CLOSING = 6  # stopped early: the close() step is queued
    FINISHED = 7  # the stream has been told (complete, error or abort)


# Module aliases: ``State.X`` is a class-attribute lookup through EnumType (~200 ns
# on 3.11), a global is not. States are singletons: compared with ``is``.
_PENDING = State.PENDING
_RUNNING = State.RUNNING
_SUSPENDED = State.SUSPENDED
_DRAINING = State.DRAINING
_PAUSED = State.PAUSED
_READING = State.READING
_CLOSING = State.CLOSING
_FINISHED = State.FINISHED
_PARKED = (_SUSPENDED, _DRAINING, _PAUSED, _READING)

# The one place where transitions are written.
_TRANSITIONS: dict[State, tuple[State, ...]] = {
    State.PENDING: (State.RUNNING, State.FINISHED),
    State.RUNNING: (*_PARKED, State.CLOSING, State.FINISHED),
    State.SUSPENDED: (State.RUNNING, State.CLOSING),
    State.DRAINING: (State.RUNNING, State.CLOSING),
    State.PAUSED: (State.RUNNING, State.CLOSING),
    State.READING: (State.RUNNING, State.CLOSING),
    State.CLOSING: (State.FINISHED,),
    State.FINISHED: (),
}
# the same as a set of ints, checked on every transition
_ALLOWED = frozenset(int(old) * 8 + int(new) for old, targets in _TRANSITIONS.items() for new in targets)


# Apps send the same status and headers again and again: validate and encode
# each distinct set once. Bounded; cleared when full. Pool threads share it:
# single dict operations (get, set, clear) are atomic, also without the GIL.
_HEADS: dict[tuple, ResponseHead] = {}
_HEADS_MAX = 1024


def app_head(status: str, headers: list[tuple[str, str]]) -> ResponseHead:
    """Validate an app's status and headers, from the cache when seen before."""
    key = None
    if type(headers) is list:
        try:
            key = (status, *headers)
            hit = _HEADS.get(key)
        except TypeError:  # unhashable items: let the checks say what is wrong
            key = hit = None
        if hit is not None:
            return hit
    head = ResponseHead(check_status(status), check_headers(headers))
    if key is not None:
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = head
    return head

# the environ keys bound to a runner, removed when it finishes
_BOUND_KEYS = ("wsgi.pause_output", "wsgiplus.pause_output", "wsgi.early_hints")

# why a request was stopped early, and what the client gets if its head is not sent yet
_STOP_STATUS = {
    "deadline": (504, "the request ran past its deadline"),
    "suspend_timeout": (504, "a suspension ran past its timeout"),
    "overload": (503, "too many suspended requests"),
}


class Suspensions:
    """Counts suspended requests (loop thread only) against an optional limit."""

    __slots__ = ("count", "limit", "timeout")

    def __init__(self, limit: int | None = None, timeout: float | None = None) -> None:
        self.count = 0
        self.limit = limit
        self.timeout = timeout  # per suspension, seconds


class Runner:
    """One request's trip through the app, from ``app(environ, start_response)`` to ``close()``.

    Made by the connection with its exchange's ``stream`` and started with the
    environ (``start(environ)``, loop thread). It ends by calling exactly one of
    ``stream.complete()``, ``stream.error(status, reason)`` or
    ``stream.abort(reason)``, once, on the loop thread. The stream calls back
    ``on_writable()`` and ``on_disconnect()`` (loop thread).
    """

    __slots__ = (
        "app",
        "environ",
        "stream",
        "loop",
        "_pool",
        "_affinity",
        "_home",
        "timeout",
        "suspensions",
        "_suspend_timer",
        "context",
        "state",
        "status",
        "headers",
        "_app_head",
        "head_sent",
        "_iterable",
        "_iterator",
        "_single_chunk",
        "_eager",
        "_closed",
        "_lock",
        "_stop_reason",
        "_pause_token",
        "_parked",
        "_resume_early",
        "_write_ready",
        "_future",
        "_timer",
        "_stop_answer",
        "__weakref__",
    )

    def __init__(
        self,
        app: Callable[..., Iterable[Any]],
        stream: Stream,
        loop: asyncio.AbstractEventLoop,
        pool: Pool,
        *,
        timeout: float | None = None,
        suspensions: Suspensions | None = None,
    ) -> None:
        self.app = app
        self.environ: dict[str, Any] = NO_ENVIRON
        self.stream = stream
        stream.consumer = self
        self.loop = loop
        self._pool = pool
        self._affinity = pool.affinity
        self._home: int | None = None  # the thread that started it, with affinity
        self.timeout = timeout
        self.suspensions = suspensions or Suspensions()
        self._suspend_timer: asyncio.TimerHandle | None = None
        self.context = contextvars.Context()
        self.state = _PENDING
        # app side: written by the step's pool thread (steps never overlap); the
        # loop reads them only after that step's wake-up
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self._app_head: ResponseHead | None = None
        self.head_sent = False
        self._iterable: Iterable[Any] | None = None
        self._iterator: Any = None
        self._single_chunk = False
        self._eager = False
        self._closed = False
        # shared between pool threads and the loop
        self._lock = stream._lock  # the exchange's one lock: _pause_token, _parked, _write_ready
        self._stop_reason: str | None = None  # written once by the loop; steps poll it
        self._pause_token: object | None = None
        self._parked = False
        self._write_ready: threading.Event | None = None
        # loop side
        self._resume_early = False
        self._future: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._stop_answer: tuple[int, str] | None = None  # the status of a request-input error

    @property
    def method(self) -> str:
        return self.stream.record.method

    def _to(self, new: State) -> None:
        """The only way ``state`` changes: refuses what ``_TRANSITIONS`` does not allow."""
        old = self.state
        if old * 8 + new not in _ALLOWED:
            raise IllegalTransition(f"runner state {old.name} -> {new.name} is not allowed")
        self.state = new

    # -- loop thread -------------------------------------------------------

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._pool.submit_to(self._home, fn, *args)

    def start(self, environ: dict[str, Any]) -> None:
        """Call the app with ``environ`` (made by ``wsgi.make_environ``) on the pool."""
        self.environ = environ
        if self.state is not _PENDING:
            self._to(_RUNNING)  # refuses: a runner starts once
        self.state = _RUNNING  # PENDING -> RUNNING, in _TRANSITIONS
        if self.timeout:
            self._timer = self.loop.call_later(self.timeout, self._on_deadline)
        self._pool.submit(self._run)

    def _after_step(self, outcome: int, arg: Any) -> None:
        stream = self.stream
        stream.flush()
        if outcome == _DONE:  # the common case first
            if self._finish():
                stream.complete()
        elif outcome == _SUSPEND:
            gate = self.suspensions
            if not self._stop_reason and gate.limit is not None and gate.count >= gate.limit:
                log.warning("%d requests already suspended: refusing %s %s", gate.count,
                            self.method, self.environ.get("PATH_INFO"))
                self._stop_reason = "overload"
            if self._stop_reason:
                self._cancel_future(arg)
                self._close_then(self._stop_reason)
                return
            self._to(_SUSPENDED)
            gate.count += 1
            if gate.timeout:
                self._suspend_timer = self.loop.call_later(gate.timeout, self._on_suspend_timeout)
            self._watch(arg)
        elif outcome == _DRAIN:
            if self._stop_reason:
                self._close_then(self._stop_reason)
            elif stream.paused:
                self._to(_DRAINING)
            else:
                self._submit(self._run)
        elif outcome == _PAUSE:
            if self._stop_reason:
                self._close_then(self._stop_reason)
            elif self._resume_early:
                self._resume_early = False
                self._submit(self._run)
            else:
                self._to(_PAUSED)
        elif outcome == _FAILED:
            if self._finish():
                stream.error(500)
        elif outcome == _ABORT:
            if self._finish():
                stream.abort("app error")
        elif outcome == _HANDED_OVER:
            if self._finish():
                stream.abort("handed over")  # send nothing, close, never reuse (gunicorn's rule)
        else:  # _STOPPED
            self._stopped(arg)

    # -- a connection handed over (WebSocket accept, takeover) -------------

    def take_over(self) -> None:
        """The connection now speaks another protocol: the runner sends no response.

        Called on the app's pool thread by ``accept()`` / ``wsgiplus.takeover``,
        during the step (the field is the step's, as ``head_sent`` always is).
        A status the app still gives ``start_response`` is never sent.
        """
        self.head_sent = True

    def as_websocket(self, suspensions: Suspensions) -> None:
        """Loop thread: waits now count against ``suspensions``; no request deadline applies.

        Called before the step that accepted posts its wake-up (the switch is
        posted first), so no suspension is counted in the old gate.
        """
        self.suspensions = suspensions
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop_for_input(self, status: int, reason: str) -> None:
        """Loop thread: the request body failed (413, 400, 408): answer ``status`` if the
        head is not sent, else cut the response; the app is stopped like a disconnect."""
        self._stop_answer = (status, reason)
        self._stop("input")

    def stop_if_suspended(self, reason: str) -> None:
        """Loop thread: stop the app if it is parked on something no one may complete now."""
        state = self.state
        if state is _SUSPENDED:
            done = getattr(self._future, "done", None)
            if done is not None and done():
                return  # its wake-up is on the way (the socket's receive() gave None)
        if state in _PARKED:
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
        if self.state is not _SUSPENDED or self._future is not fut:
            return
        self._future = None
        self._leave_suspension()
        self._to(_RUNNING)
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

    def on_writable(self) -> None:
        """The stream can take more data (HTTP/1.1: the write buffer drained)."""
        if self.state is _DRAINING:
            self._to(_RUNNING)
            self._submit(self._run)
        self._release_writer()

    def on_drain(self) -> None:
        """The name before the seam (a method, not an alias: the compiled build needs one)."""
        self.on_writable()

    def _on_resume(self) -> None:
        if self.state is _PAUSED:
            self._to(_RUNNING)
            self._submit(self._run)
        elif self.state is _RUNNING:
            self._resume_early = True

    def on_disconnect(self) -> None:
        """The client went away: stop the app, close the iterable, cancel what it waits on."""
        self._stop("disconnect")
        self._release_writer()

    def _on_deadline(self) -> None:
        self._timer = None
        log.warning("request timeout: %s %s ran past %.3gs", self.method,
                    self.environ.get("PATH_INFO"), self.timeout)
        self._stop("deadline")

    def _stop(self, reason: str) -> None:
        state = self.state
        if state is _FINISHED or state is _CLOSING or self._stop_reason:
            return
        if state is _PENDING:
            self._to(_FINISHED)  # the app was never called: nothing to tell
            return
        self._stop_reason = reason  # a running step sees it at its next item
        if state is _SUSPENDED:
            self._leave_suspension()
        if state in _PARKED:
            self._cancel_future(self._future)
            self._future = None
            self._close_then(reason)

    def _close_then(self, reason: str) -> None:
        self._to(_CLOSING)
        self._submit(self._run_close, reason)

    def _stopped(self, reason: str) -> None:
        stream = self.stream
        stream.flush()
        if not self._finish():
            return
        answer = _STOP_STATUS.get(reason) or (self._stop_answer if reason == "input" else None)
        if answer is not None and not self.head_sent and not stream.disconnected:
            self.status = f"{answer[0]} {answer[1]}"
            stream.error(*answer)
        else:
            stream.abort(reason)

    def _finish(self) -> bool:
        """Enter FINISHED; False if already there (the stream is told exactly once).

        Also drops the references that make cycles (runner <-> stream, runner <->
        environ), so a finished request is freed by reference counting, not the
        cyclic GC; the stream keeps the environ in its record for the access log.
        """
        state = self.state
        if state is _FINISHED:
            return False
        if state is not _RUNNING:  # RUNNING -> FINISHED is the common case, in _TRANSITIONS
            self._to(_FINISHED)
        self.state = _FINISHED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stream.consumer = None
        env = self.environ
        for key in _BOUND_KEYS:  # bound to this runner: an environ the app keeps holds no runner
            env.pop(key, None)
        self.environ = NO_ENVIRON
        self._iterable = self._iterator = None
        return True

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

    def _release_writer(self) -> None:
        """Wake an app thread blocked in the legacy ``write()``."""
        with self._lock:
            event = self._write_ready
            self._write_ready = None
        if event is not None:
            event.set()

    def _check_writable(self) -> None:
        """For the blocking ``write()``: release the app thread once the stream drains."""
        stream = self.stream
        stream.flush()
        if not stream.paused or stream.disconnected:
            self._release_writer()

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
        stream = self.stream
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
                self._single_chunk = eager and len(result) == 1  # type: ignore[arg-type]
                if type(result) is FileWrapper and stream.takes_files and self._offer_file(result):
                    self._iterator = iter(())  # the next step (when the file is sent) ends the body
                    return _DRAIN, None
                it = self._iterator = iter(result)
            else:
                eager = self._eager
            while True:
                if self._stop_reason:
                    self._close_iterable()
                    return _STOPPED, self._stop_reason
                if not eager and stream.outbox is not None and not stream.flush_posted:
                    stream.request_flush()
                item = next(it)
                if type(item) is bytes or isinstance(item, (bytes, bytearray, memoryview)):
                    if item:
                        if not self._send(bytes(item) if type(item) is not bytes else item):
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
            if not self.head_sent:
                self._start_head(0)
            stream.end()
        except BaseException as exc:
            return self._app_error(exc)
        self._close_iterable()
        return _DONE, None

    def _offer_file(self, wrapper: FileWrapper) -> bool:
        """``wsgi.file_wrapper`` over a regular file: hand the file to the stream (zero-copy).

        From the file's current offset to its end, bounded by the app's Content-Length
        (a Content-Length longer than that, or anything not a regular file: False, and
        the body is copied in blocks as for any iterable). The stream sends it on the
        loop and resumes the runner (``on_writable``) when it is done; the iterable is
        closed by the step that follows, as for any body.
        """
        head = self._app_head
        if head is None:
            return False  # the iteration raises what is wrong
        f = wrapper.filelike
        try:
            fd = f.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            offset = f.tell()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            return False
        count = max(0, st.st_size - offset)
        if head.content_length is not None:
            if head.content_length > count:
                return False  # the copy path frames the short body (and closes the connection)
            count = head.content_length
            known = None
        else:
            known = count
        self._start_head(known)
        self.stream.send_file(fd, offset, count)
        return True

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
        if self._send(data):
            self.stream.request_flush()
            return
        event = threading.Event()
        with self._lock:
            self._write_ready = event
        self.loop.call_soon_threadsafe(self._check_writable)
        event.wait()
        if self._stop_reason == "disconnect":
            raise ConnectionResetError("client disconnected")

    def _send(self, data: bytes) -> bool:
        """One body chunk to the stream; False when the request should wait to write more."""
        stream = self.stream
        if not self.head_sent:  # the head goes with the first bytes (_start_head, inlined)
            head = self._app_head
            if head is None:
                raise AssertionError("the app sent a body before calling start_response")
            stream.start(head, len(data) if self._single_chunk else None)
            self.head_sent = True
        return stream.data(data)

    def _start_head(self, known_length: int | None) -> None:
        """Hand the app's head to the stream (once, with the first bytes or at the end)."""
        head = self._app_head
        if head is None:
            raise AssertionError("the app sent a body (or returned) before calling start_response")
        self.stream.start(head, known_length)
        self.head_sent = True

    def _app_error(self, exc: BaseException) -> tuple[int, Any]:
        if self._stop_reason == "input" and not self.head_sent:
            # the app's read raised because the body failed: the client gets that status
            self._close_iterable()
            return _STOPPED, "input"
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
        """``wsgi.early_hints(headers)`` (as gunicorn): a ``103 Early Hints`` now.

        Before the response head only; bad headers raise like ``start_response``'s.
        The stream decides whether its protocol sends it (HTTP/1.1 clients only
        on HTTP/1.x, as gunicorn does).
        """
        fields = check_headers(headers)
        if self.head_sent or self._stop_reason:
            return
        self.stream.informational(103, fields)

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
