"""The thread pool that runs app steps.

Not ``concurrent.futures.ThreadPoolExecutor``: the runner never waits on a
step's Future (it posts its own wake-up to the loop), and the pool must tell
the watchdog which thread has been inside one step for how long. A job is a
plain ``(fn, args)`` tuple on a C ``SimpleQueue``: the cheapest hand-off the
standard library has.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

log = logging.getLogger("wsgiplus.error")

__all__ = ["Pool", "ThreadPool"]


class Pool(Protocol):
    """What the runner needs of a pool: ``ThreadPool``, or a test's fake (a protocol, so
    the compiled build checks no class at the boundary)."""

    affinity: bool

    def submit(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def submit_to(self, index: int | None, fn: Callable[..., Any], *args: Any) -> None: ...

    def current_index(self) -> int | None: ...


_local = threading.local()  # which pool thread this is: for affinity, not request state


class ThreadPool:
    """A fixed set of threads that run submitted callables in order of arrival.

    With ``affinity`` every thread has its own queue: ``submit_to(index, ...)``
    runs a job on one given thread (a request resuming where it started), and
    ``submit`` picks the least loaded thread. The price is head-of-line waiting:
    a job waits for its thread even when others are idle.
    """

    def __init__(self, threads: int, name: str = "wsgiplus", affinity: bool = False) -> None:
        if threads < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = threads
        self.affinity = affinity
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(threads)] if affinity else []
        # per thread: monotonic start of the job it runs, or 0.0 when idle
        self._started: list[float] = [0.0] * threads
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.affinity:
            started = self._started
            best = min(range(self.size), key=lambda i: self._queues[i].qsize() + (started[i] > 0))
            self._queues[best].put((fn, args))
        else:
            self._queue.put((fn, args))

    def submit_to(self, index: int | None, fn: Callable[..., Any], *args: Any) -> None:
        """Run on thread ``index`` when the pool keeps affinity, else on any thread."""
        if self.affinity and index is not None:
            self._queues[index].put((fn, args))
        else:
            self.submit(fn, *args)

    @staticmethod
    def current_index() -> int | None:
        """The index of the pool thread running the caller, None outside the pool."""
        return getattr(_local, "index", None)

    def busy(self) -> int:
        """How many threads are inside a job right now."""
        return sum(1 for s in self._started if s)

    def queued(self) -> int:
        """How many submitted jobs wait for a thread (approximate, as ``qsize`` is)."""
        if self.affinity:
            return sum(q.qsize() for q in self._queues)
        return self._queue.qsize()

    def long_running(self, threshold: float) -> Iterator[tuple[threading.Thread, float]]:
        """Threads that have been inside one job for more than ``threshold`` seconds."""
        now = time.monotonic()
        for thread, started in zip(self._threads, self._started, strict=True):
            if started and now - started > threshold:
                yield thread, now - started

    def _work(self, index: int) -> None:
        _local.index = index
        get = (self._queues[index] if self.affinity else self._queue).get
        started = self._started
        monotonic = time.monotonic
        while True:
            job = get()
            if job is None:
                return
            fn, args = job
            started[index] = monotonic()
            try:
                fn(*args)
            except BaseException:  # a job must never kill its thread
                log.exception("unhandled error in a pool job")
            started[index] = 0.0
            job = fn = args = None  # an idle thread keeps no finished request alive

    def shutdown(self, timeout: float | None = None) -> None:
        """Finish queued jobs, then stop the threads (wait up to ``timeout``)."""
        for i in range(self.size):
            (self._queues[i] if self.affinity else self._queue).put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            if t is threading.current_thread():
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
