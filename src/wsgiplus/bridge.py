"""The async bridge: futures a WSGI+ app can yield, for coroutines, timers and blocking calls.

A WSGI+ app suspends by yielding a future. This module makes the futures:

    from wsgiplus import bridge

    def app(environ, start_response):
        fut = bridge.run(client.get(url))      # a coroutine, on the bridge's loop
        yield fut                              # the thread goes back to the pool
        resp = fut.result()                    # resumed on some pool thread

Coroutines run on one event loop owned by this module, in a dedicated daemon
thread started on first use (not the server's loop: see docs/writing-apps.md
and bench/bridge_loop.py for why). It works the same under WSGI+, under a
plain WSGI server behind ``wsgiplus.compat.portable``, and in a script or a
test with no server at all. The loop stops at interpreter exit (or on
``shutdown()``), after running the ``on_shutdown`` hooks, e.g. closing an
``httpx.AsyncClient``; a forked child starts its own loop on first use.

Every function returns a ``concurrent.futures.Future`` (a lighter subclass,
``wsgiplus.runner.futures.Future``, for ``run``/``sleep``/``gather``): thread-safe,
cancellable, and ``cancel()`` reaches the coroutine (the server cancels the
future a request waits on when its client disconnects). Coroutines, offloaded
calls and their children see the caller's contextvars (a copy, as asyncio
tasks do), so per-request context travels with the work.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import heapq
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .runner.futures import Future
from .server.core import new_event_loop

log = logging.getLogger("wsgiplus.bridge")

__all__ = [
    "Bridge",
    "default",
    "gather",
    "get_loop",
    "offload",
    "on_shutdown",
    "run",
    "shutdown",
    "sleep",
]

T = TypeVar("T")


class Bridge:
    """An event loop in its own thread plus an executor for blocking calls, both started lazily.

    ``loop``: ``auto`` (uvloop if installed, as the server does), ``uvloop`` or ``asyncio``.
    ``offload_threads`` bounds the executor: blocking calls must not be able to
    take an unbounded number of threads any more than requests can.
    """

    def __init__(self, offload_threads: int = 32, name: str = "wsgiplus-bridge",
                 loop: str = "auto") -> None:
        self.offload_threads = offload_threads
        self.name = name
        self.loop_kind = loop
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._hooks: list[Callable[[], Any]] = []
        self._timers: _Timers | None = None  # sleeps of the current loop
        self._pid = os.getpid()
        if hasattr(os, "register_at_fork"):
            # at once in the child: a lock held by a parent thread at fork time stays held there
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (b := ref()) is not None and b._after_fork())

    # -- lifecycle ---------------------------------------------------------------

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's running loop, started on first call (from any thread)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()
            if self._loop is None:
                self._start()
            return self._loop  # type: ignore[return-value]

    def _start(self) -> None:
        loop = new_event_loop(self.loop_kind)
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                try:
                    _cancel_all(loop)
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()

        thread = threading.Thread(target=main, name=f"{self.name}-loop", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def _after_fork(self) -> None:
        """In a forked child the parent's loop thread does not exist: forget it."""
        self._pid = os.getpid()
        self._loop = self._thread = None
        self._executor = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._pid == os.getpid()

    def on_shutdown(self, hook: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``hook()`` on the loop at shutdown, awaiting it if it returns an awaitable.

        Usable as a decorator; typical use: ``bridge.on_shutdown(client.aclose)``.
        """
        self._hooks.append(hook)
        return hook

    def shutdown(self, timeout: float = 5.0) -> None:
        """Run the shutdown hooks, cancel what is still running, stop the loop and executor.

        The bridge can be used again afterwards: it starts afresh on next use.
        """
        with self._lock:
            loop, thread, executor = self._loop, self._thread, self._executor
            self._loop = self._thread = None
            self._executor = None
            if self._pid != os.getpid():
                return
        if loop is not None and thread is not None and thread.is_alive():
            if self._hooks and thread is not threading.current_thread():
                fut = asyncio.run_coroutine_threadsafe(self._run_hooks(), loop)
                try:
                    fut.result(timeout)
                except Exception:
                    log.exception("bridge shutdown hooks failed")
            loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join(timeout)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run_hooks(self) -> None:
        for hook in self._hooks:
            try:
                result = hook()
                if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                    await result
            except Exception:
                log.exception("bridge shutdown hook %r failed", hook)

    # -- futures ------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> Future[T]:
        """Schedule ``coro`` on the bridge loop; a future of its result.

        With ``timeout`` the coroutine is cancelled after that many seconds and the
        future fails with ``TimeoutError``. Cancelling the future cancels the coroutine.
        """
        if not asyncio.iscoroutine(coro):
            raise TypeError(f"bridge.run() takes a coroutine, not {type(coro).__name__}")
        if timeout is not None:
            coro = _bounded(coro, timeout)
        loop = self.get_loop()
        fut: Future[T] = Future()

        def start() -> None:
            # Runs in a copy of the caller's context (call_soon_threadsafe captures
            # it) and the task copies that, so contextvars follow the coroutine.
            if fut.cancelled():  # never marked running: cancel() must keep working
                coro.close()
                return
            task = loop.create_task(coro)
            task.add_done_callback(lambda t: _copy_outcome(t, fut))
            fut.add_done_callback(lambda f: f.cancelled() and _call_soon(loop, task.cancel))

        loop.call_soon_threadsafe(start)
        return fut

    def sleep(self, seconds: float, result: T = None) -> Future[T]:  # type: ignore[assignment]
        """A future that completes with ``result`` after ``seconds``: a timer, not a thread."""
        fut: Future[T] = Future()
        loop = self.get_loop()
        timers = self._timers
        if timers is None or timers.loop is not loop:
            timers = self._timers = _Timers(loop)
        loop.call_soon_threadsafe(timers.add, seconds, fut, result)
        return fut

    def offload(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run a blocking ``fn(*args, **kwargs)`` on the bridge's executor (not the server's pool).

        The seed's ``defer_to_another_thread``: the request gives its pool thread
        back while, e.g., a blocking client library or a file read runs elsewhere.
        """
        executor = self._executor
        if executor is None or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._after_fork()
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        self.offload_threads, thread_name_prefix=f"{self.name}-offload"
                    )
                executor = self._executor
        ctx = contextvars.copy_context()
        return executor.submit(ctx.run, fn, *args, **kwargs)

    def gather(
        self, *aws: Future[Any] | Coroutine[Any, Any, Any], return_exceptions: bool = False
    ) -> Future[list[Any]]:
        """One future for several: done when all are, with their results in order.

        Coroutines are ``run()`` first. The first failure fails the whole (unless
        ``return_exceptions``, which puts exceptions in the list instead).
        Cancelling the result cancels every child still running.
        """
        children: list[Any] = [self.run(a) if asyncio.iscoroutine(a) else a for a in aws]
        return fan_in(children, return_exceptions=return_exceptions)


async def _bounded(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """``wait_for`` that fails with the builtin ``TimeoutError`` on every Python (3.10's differs)."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError as exc:
        raise TimeoutError(f"coroutine did not finish within {timeout}s") from exc


def fan_in(children: Iterable[Any], return_exceptions: bool = False) -> Future[list[Any]]:
    """``gather`` for futures only (no loop needed): any objects with ``add_done_callback``."""
    children = list(children)
    out: Future[list[Any]] = Future()
    if not children:
        out.set_result([])
        return out
    results: list[Any] = [None] * len(children)
    remaining = [len(children)]
    lock = threading.Lock()

    def child_done(index: int, child: Any) -> None:
        try:
            value = child.result()
        except BaseException as exc:  # CancelledError included
            if not return_exceptions:
                _settle(out, lock, exception=exc)
                return
            value = exc
        with lock:
            results[index] = value
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            _settle(out, lock, result=results)

    def out_done(f: Future[Any]) -> None:
        if f.cancelled():
            for child in children:
                _cancel(child)

    out.add_done_callback(out_done)
    for i, child in enumerate(children):
        _on_done(child, lambda c, i=i: child_done(i, c))
    return out


def _on_done(fut: Any, callback: Callable[[Any], None]) -> None:
    """``add_done_callback`` that is safe from any thread for asyncio futures too."""
    if isinstance(fut, asyncio.Future):
        fut.get_loop().call_soon_threadsafe(fut.add_done_callback, callback)
    else:
        fut.add_done_callback(callback)


def _cancel(fut: Any) -> None:
    if isinstance(fut, asyncio.Future):
        fut.get_loop().call_soon_threadsafe(fut.cancel)
    elif hasattr(fut, "cancel"):
        fut.cancel()


def _settle(fut: Future[Any], lock: threading.Lock, result: Any = None,
            exception: BaseException | None = None) -> None:
    """Complete ``fut`` once; a no-op if it is already done (or was cancelled meanwhile)."""
    with lock:
        if fut.done():
            return
        try:
            if exception is not None:
                fut.set_exception(exception)
            else:
                fut.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass


def _copy_outcome(task: asyncio.Future[Any], fut: Future[Any]) -> None:
    """A finished task's outcome onto the future the app holds (unless cancelled meanwhile)."""
    if fut.done():
        return
    if task.cancelled():
        fut.cancel()
        return
    exc = task.exception()
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(task.result())
    except concurrent.futures.InvalidStateError:  # cancelled from another thread just now
        pass


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # the loop is closed: nothing left to cancel
        pass


class _Timers:
    """All of a loop's sleeps on one heap and one TimerHandle.

    A TimerHandle and a cancel callback per sleep cost ~800 bytes; a heap entry
    ~100. A cancelled sleep stays on the heap until its time (then is skipped):
    bounded by the sleep itself, and cheaper than finding it.
    """

    __slots__ = ("loop", "heap", "handle", "when", "seq")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Future[Any], Any]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.when = 0.0
        self.seq = 0

    def add(self, seconds: float, fut: Future[Any], result: Any) -> None:
        if fut.cancelled():
            return
        when = self.loop.time() + max(0.0, seconds)
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, fut, result))
        if self.handle is None or when < self.when:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.when = when
        self.handle = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.handle = None
        heap = self.heap
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            _, _, fut, result = heapq.heappop(heap)
            _resolve(fut, result)
        if heap:
            self._arm(heap[0][0])


def _resolve(fut: Future[Any], result: Any) -> None:
    if fut.set_running_or_notify_cancel():
        fut.set_result(result)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


default = Bridge()
"""The process-wide bridge the module-level functions use."""

run = default.run
sleep = default.sleep
offload = default.offload
gather = default.gather
get_loop = default.get_loop
on_shutdown = default.on_shutdown
shutdown = default.shutdown

atexit.register(default.shutdown)
