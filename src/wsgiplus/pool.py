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
from typing import Any

log = logging.getLogger("wsgiplus.error")

__all__ = ["ThreadPool"]


class ThreadPool:
    """A fixed set of threads that run submitted callables in order of arrival."""

    def __init__(self, threads: int, name: str = "wsgiplus") -> None:
        if threads < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = threads
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # per thread: monotonic start of the job it runs, or 0.0 when idle
        self._started: list[float] = [0.0] * threads
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def busy(self) -> int:
        """How many threads are inside a job right now."""
        return sum(1 for s in self._started if s)

    def long_running(self, threshold: float) -> Iterator[tuple[threading.Thread, float]]:
        """Threads that have been inside one job for more than ``threshold`` seconds."""
        now = time.monotonic()
        for thread, started in zip(self._threads, self._started, strict=True):
            if started and now - started > threshold:
                yield thread, now - started

    def _work(self, index: int) -> None:
        get = self._queue.get
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

    def shutdown(self, timeout: float | None = None) -> None:
        """Finish queued jobs, then stop the threads (wait up to ``timeout``)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            if t is threading.current_thread():
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
