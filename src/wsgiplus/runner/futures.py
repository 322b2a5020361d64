"""A ``concurrent.futures.Future`` that weighs ~100 bytes less than a kilobyte.

The standard Future builds a ``threading.Condition`` up front (an RLock plus
five bound methods, ~1.1 KB), though almost no future of the bridge is ever
waited on with ``result()`` from another thread: the server waits through a
done-callback. With ten thousand suspended requests that is ten megabytes.
This subclass keeps a plain lock and makes the condition only when a thread
really blocks. It is still a ``concurrent.futures.Future``: ``wait()``,
``as_completed()`` and ``asyncio.wrap_future()`` accept it.
"""

from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures._base import PENDING
from typing import Any, Generic, TypeVar

__all__ = ["Future"]

T = TypeVar("T")


class _LazyCondition:
    """Enough of ``threading.Condition`` for ``Future``: the Condition is made on first wait."""

    __slots__ = ("_lock", "_cond")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        # Called with the lock held, so making the Condition here cannot race notify_all.
        cond = self._cond
        if cond is None:
            cond = self._cond = threading.Condition(self._lock)
        return cond.wait(timeout)

    def notify(self, n: int = 1) -> None:
        if self._cond is not None:
            self._cond.notify(n)

    def notify_all(self) -> None:
        if self._cond is not None:
            self._cond.notify_all()


class Future(concurrent.futures.Future, Generic[T]):  # type: ignore[type-arg]
    """``concurrent.futures.Future`` with a condition made only when a thread blocks on it."""

    def __init__(self) -> None:  # noqa: D107 - same state as the base, lighter condition
        self._condition = _LazyCondition()  # type: ignore[assignment]
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
