"""Django views that suspend: a streaming response whose body may yield futures.

    from wsgiplus import bridge
    from wsgiplus.contrib.django import SuspendingResponse

    def order(request):
        def body():
            Order.objects.create(state="new")          # inside the request's transaction
            fut = bridge.run(fetch_price())
            yield fut                                   # no thread held meanwhile
            Order.objects.filter(...).update(price=fut.result())
            yield b"ok"                                 # commit happens at the end
        return SuspendingResponse(body(), content_type="text/plain")

What plain Django does with such a view, found with Django 5.2 on WSGI+:

* ``StreamingHttpResponse`` passes every item through ``make_bytes``, so a
  future becomes the bytes of its ``repr`` and the server never sees it.
* The body runs after the view returned, so ``ATOMIC_REQUESTS`` does not cover
  it (Django documents this for streaming responses), and it uses the database
  connection of whatever thread runs each step: Django's connections are
  thread-critical (``asgiref.local.Local(thread_critical=True)``). A body that
  opens ``transaction.atomic()``, suspends and resumes on another pool thread
  runs its second half on another connection, outside the transaction; if it
  resumes on the same thread, the request that used that thread meanwhile ran
  inside its transaction. With SQLite, a request holding the write lock while
  suspended makes the others wait on a pool thread until "database is locked".

``SuspendingResponse`` fixes all three. Its body runs, step after step, with
the request's *own* connection objects installed in the current thread's
slot for the length of the step (and the thread's own put back after), with
thread sharing declared to Django's validation, inside ``transaction.atomic``
for every alias whose ``ATOMIC_REQUESTS`` is on (or as told by ``atomic=``);
it commits when the body ends, rolls back on an error or when the client
goes away, and closes its connections. On SQLite, which allows one writer, a
transactional body first waits for its turn on a future - suspended, holding
no thread - so requests queue instead of failing with "database is locked".

Middleware that wraps ``streaming_content`` (e.g. ``GZipMiddleware``) gets an
iterator that waits for futures in place: correct, but it holds the thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.http import StreamingHttpResponse

from ..compat import is_future, wait

log = logging.getLogger("wsgiplus.django")

__all__ = ["FutureLock", "RequestConnections", "SuspendingResponse", "sqlite_writer_lock"]

_MISSING = object()


class FutureLock:
    """A FIFO mutex whose ``acquire()`` returns a future: waiters suspend instead of blocking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self._waiters: deque[Future[None]] = deque()

    def acquire(self) -> Future[None]:
        fut: Future[None] = Future()
        with self._lock:
            if not self._held:
                self._held = True
                fut.set_result(None)
            else:
                self._waiters.append(fut)
        return fut

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                nxt = self._waiters.popleft()
                if nxt.set_running_or_notify_cancel():  # skip waiters that gave up
                    nxt.set_result(None)
                    return
            self._held = False

    def abandon(self, fut: Future[None]) -> None:
        """Give up a turn taken with ``acquire()``: cancel it, or release it if already granted."""
        if not fut.cancel():
            if fut.done() and not fut.cancelled():
                self.release()

    @property
    def locked(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """Waiters still in the queue (not cancelled)."""
        with self._lock:
            return sum(1 for w in self._waiters if not w.cancelled())


_sqlite_locks: dict[str, FutureLock] = {}
_sqlite_locks_guard = threading.Lock()


def sqlite_writer_lock(name: str) -> FutureLock:
    """The per-process lock that orders transactional bodies on one SQLite file."""
    with _sqlite_locks_guard:
        lock = _sqlite_locks.get(name)
        if lock is None:
            lock = _sqlite_locks[name] = FutureLock()
        return lock


class RequestConnections:
    """One request's own Django connection objects, installed per step on whatever thread runs it."""

    def __init__(self, aliases: Iterable[str] | None = None) -> None:
        self.aliases = list(aliases if aliases is not None else connections)
        self.conns = {alias: connections.create_connection(alias) for alias in self.aliases}
        for conn in self.conns.values():
            conn.inc_thread_sharing()  # declared: this object moves between pool threads
        self.closed = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Make ``connections[alias]`` this request's object for the block, then put back the thread's."""
        store = connections._connections  # the thread-critical asgiref Local Django keeps them in
        saved = {alias: getattr(store, alias, _MISSING) for alias in self.aliases}
        for alias, conn in self.conns.items():
            setattr(store, alias, conn)
        try:
            yield
        finally:
            for alias, prev in saved.items():
                if prev is _MISSING:
                    with contextlib.suppress(AttributeError):
                        delattr(store, alias)
                else:
                    setattr(store, alias, prev)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in self.conns.values():
            try:
                conn.close()
            except Exception:
                log.exception("closing the request's %r connection failed", conn.alias)
            finally:
                conn.dec_thread_sharing()


class SuspendingResponse(StreamingHttpResponse):
    """A ``StreamingHttpResponse`` whose content may yield futures, run as one transaction.

    ``atomic``: ``None`` (default) wraps the body in a transaction for each alias
    with ``ATOMIC_REQUESTS`` on, like Django does for views; ``True`` for the
    aliases in ``using`` (default ``"default"``); ``False`` for none.
    ``sqlite_lock``: serialise transactional bodies per SQLite file (default on).
    """

    def __init__(
        self,
        streaming_content: Iterable[Any] = (),
        *args: Any,
        atomic: bool | None = None,
        using: str | Iterable[str] | None = None,
        sqlite_lock: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(streaming_content, *args, **kwargs)
        self.atomic = atomic
        self.using = [using] if isinstance(using, str) else list(using or [DEFAULT_DB_ALIAS])
        self.sqlite_lock = sqlite_lock

    @property
    def streaming_content(self) -> Iterator[bytes]:  # type: ignore[override]
        """For consumers other than the server (middleware, test client): futures waited for here."""
        return self._blocking(self._iterator)

    @streaming_content.setter
    def streaming_content(self, value: Iterable[Any]) -> None:
        self._set_streaming_content(value)

    def _blocking(self, iterator: Iterator[Any]) -> Iterator[bytes]:
        for item in iterator:
            if is_future(item):
                wait(item)
                continue
            yield self.make_bytes(item)

    def atomic_aliases(self) -> list[str]:
        if self.atomic is False:
            return []
        if self.atomic is True:
            return self.using
        return [alias for alias in connections if connections.settings[alias].get("ATOMIC_REQUESTS")]

    def __iter__(self) -> Iterator[Any]:
        driver = self._drive()
        # the server closes the response, not this iterator: close the driver first
        # (rollback, connections) before Django's closers and request_finished run
        self._resource_closers.insert(0, driver.close)
        return driver

    def _drive(self) -> Iterator[Any]:
        atomic_aliases = self.atomic_aliases()
        conns = RequestConnections()
        turns: list[tuple[FutureLock, Future[None]]] = []
        blocks: list[Any] = []
        source = self._iterator
        finished = False
        try:
            if self.sqlite_lock:
                for alias in atomic_aliases:
                    conn = conns.conns[alias]
                    if conn.vendor == "sqlite":
                        lock = sqlite_writer_lock(str(conn.settings_dict["NAME"]))
                        turn = lock.acquire()
                        turns.append((lock, turn))
                        if not turn.done():
                            yield turn
            with conns.installed():
                for alias in atomic_aliases:
                    block = transaction.atomic(using=alias)
                    block.__enter__()
                    blocks.append(block)
            while True:
                with conns.installed():
                    try:
                        item = next(source)
                    except StopIteration:
                        _exit_blocks(blocks, None)  # commit; a failure leaves the rest to roll back
                        finished = True
                        break
                    if not is_future(item):
                        item = self.make_bytes(item)
                yield item
        finally:
            try:
                with conns.installed():
                    if not finished:
                        close = getattr(source, "close", None)
                        try:
                            if close is not None:
                                close()  # the view's generator, while its connection is installed
                        finally:
                            _exit_blocks(blocks, RuntimeError("response not completed: rolled back"))
            finally:  # whatever failed above, the connections and the writer turn are given back
                conns.close()
                for lock, turn in turns:
                    lock.abandon(turn)


def _exit_blocks(blocks: list[Any], error: BaseException | None) -> None:
    """Leave the atomic blocks innermost first: commit when ``error`` is None, else roll back."""
    while blocks:
        block = blocks.pop()
        if error is None:
            block.__exit__(None, None, None)
        else:
            block.__exit__(type(error), error, error.__traceback__)
