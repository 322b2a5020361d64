"""Deterministic fakes for unit tests of the layers: no sockets, no threads of their own.

* ``FakeLoop``: what the runner and a connection use of an event loop
  (``call_soon_threadsafe``, ``call_later``, ``time``); callbacks and timers run
  only when the test says so (``run_ready``, ``advance``).
* ``FakePool``: what the runner uses of ``ThreadPool``; submitted jobs run only
  in ``run_jobs`` (on the calling thread).
* ``drive(loop, pool)``: run jobs and callbacks until nothing is left.
* ``RecordingStream``: a ``streams.Stream`` that records what the runner asked.
* ``FakeTransport``: bytes out, and what the connection asked of its transport.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from wsgiplus.server.streams import ExchangeRecord, ResponseHead, Stream


class FakeTimer:
    def __init__(self, when: float, fn: Callable[..., None], args: tuple) -> None:
        self.when, self.fn, self.args = when, fn, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.ready: deque[tuple[Callable[..., None], tuple]] = deque()
        self.timers: list[FakeTimer] = []
        self.now = 0.0
        self.wakeups = 0  # call_soon_threadsafe calls: the runner's batching is counted
        self._lock = threading.Lock()

    def call_soon_threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self.wakeups += 1
            self.ready.append((fn, args))

    call_soon = call_soon_threadsafe

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + delay, fn, args)
        self.timers.append(timer)
        return timer

    def time(self) -> float:
        return self.now

    def run_ready(self) -> int:
        n = 0
        while True:
            with self._lock:
                if not self.ready:
                    return n
                fn, args = self.ready.popleft()
            fn(*args)
            n += 1

    def advance(self, seconds: float) -> None:
        """Move the clock and fire the timers that are due, in order."""
        self.now += seconds
        due = sorted((t for t in self.timers if t.when <= self.now and not t.cancelled), key=lambda t: t.when)
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            if not timer.cancelled:
                timer.fn(*timer.args)

    def pending_timers(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


class FakePool:
    affinity = False

    def __init__(self) -> None:
        self.jobs: deque[tuple[Callable[..., None], tuple]] = deque()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.jobs.append((fn, args))

    def submit_to(self, index: int | None, fn: Callable[..., None], *args: Any) -> None:
        self.jobs.append((fn, args))

    def current_index(self) -> int:
        return 0

    def run_jobs(self) -> int:
        n = 0
        while self.jobs:
            fn, args = self.jobs.popleft()
            fn(*args)
            n += 1
        return n


def drive(loop: FakeLoop, pool: FakePool, limit: int = 10_000) -> None:
    """Run pool jobs and loop callbacks until both are empty (bounded)."""
    for _ in range(limit):
        if not (pool.run_jobs() + loop.run_ready()):
            return
    raise AssertionError(f"drive(): still busy after {limit} rounds")


class RecordingStream(Stream):
    """A stream that keeps what the runner sent: ``wire`` (delivered items, in order)
    and ``outcome`` (the one of complete/error/abort it was told, with its argument)."""

    __slots__ = ("wire", "outcomes", "head", "known_length", "ended", "hints", "__weakref__")

    def __init__(self, loop: Any, method: str = "GET") -> None:
        super().__init__(loop, ExchangeRecord(method))
        self.wire: list[Any] = []
        self.outcomes: list[tuple[str, Any]] = []
        self.head: ResponseHead | None = None
        self.known_length: int | None = None
        self.ended = False
        self.hints: list[tuple[int, list]] = []  # informational responses (1xx)

    def informational(self, status: int, headers: list[tuple[str, str]]) -> None:
        assert self.head is None, "a 1xx after the head"
        self.hints.append((status, headers))

    def start(self, head: ResponseHead, known_length: int | None) -> bool:
        assert self.head is None, "start() called twice"
        self.head, self.known_length = head, known_length
        self.record.status = head.status_code
        return self._push(("head", head.status_code), 0)

    def data(self, data: bytes) -> bool:
        assert self.head is not None and not self.ended
        self.record.bytes_sent += len(data)
        return self._push(data, len(data))

    def end(self) -> None:
        assert self.head is not None and not self.ended
        self.ended = True
        self._push(("end",), 0)

    def deliver(self, items: list[Any]) -> None:
        self.wire.extend(items)

    def complete(self) -> None:
        self.outcomes.append(("complete", None))

    def error(self, status: int, reason: str = "") -> None:
        self.outcomes.append(("error", status))

    def abort(self, reason: str) -> None:
        self.outcomes.append(("abort", reason))

    @property
    def body(self) -> bytes:
        return b"".join(item for item in self.wire if isinstance(item, bytes))

    @property
    def outcome(self) -> tuple[str, Any] | None:
        assert len(self.outcomes) <= 1, f"the stream was told more than once: {self.outcomes}"
        return self.outcomes[0] if self.outcomes else None


class FakeTransport:
    """An ``asyncio.Transport`` stand-in: collects what is written."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.peer = peer

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default
