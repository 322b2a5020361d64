"""Settings, views and the WSGI app of the test project, in one module.

Run: ``PYTHONPATH=tests DJANGO_PROJECT_DB=/tmp/db.sqlite3 wsgiplus django_project.site:application``
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import Future
from typing import Any

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.gzip.GZipMiddleware",
        ],
        INSTALLED_APPS=["django_project"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.environ.get("DJANGO_PROJECT_DB", "db.sqlite3"),
                "ATOMIC_REQUESTS": True,
            }
        },
    )

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from django_project.models import Entry  # noqa: E402
from wsgiplus import bridge  # noqa: E402
from wsgiplus.contrib.django import SuspendingResponse, sqlite_writer_lock  # noqa: E402

_lock = threading.Lock()
_gates: dict[str, tuple[list[int], Future[int]]] = {}
_suspended: set[str] = set()
_closed: set[str] = set()


def _arrive(batch: str, expect: int) -> Future[int]:
    """A future that completes once ``expect`` requests of ``batch`` have reached a view.

    If they never all arrive (because arrivals are stuck behind threads held by
    earlier requests), it fails after 30 s instead of hanging the test.
    """
    with _lock:
        count, gate = _gates.setdefault(batch, ([0], Future()))
        count[0] += 1
        if count[0] >= expect and not gate.done():
            gate.set_result(count[0])
        elif count[0] == 1:
            def give_up(_: Any) -> None:
                with _lock:
                    if not gate.done():
                        gate.set_exception(RuntimeError(f"only {count[0]} of {expect} arrived"))

            bridge.sleep(30).add_done_callback(give_up)
    return gate


def txn(request: Any, rid: str) -> SuspendingResponse:
    """Write, suspend (twice), check the first write is visible, write again; commit at the end."""
    gate = _arrive(request.GET.get("batch", "-"), int(request.GET.get("expect", "1")))

    def body() -> Any:
        first_thread = threading.get_ident()
        Entry.objects.create(rid=rid, step=1)
        yield gate
        arrived = gate.result()
        nap = bridge.sleep(0.001)
        yield nap
        # uncommitted: visible only on the connection and transaction that wrote it
        saw_own_write = Entry.objects.filter(rid=rid, step=1).count()
        in_atomic = connection.in_atomic_block
        Entry.objects.create(rid=rid, step=2, note=f"arrived={arrived}")
        yield json.dumps({"rid": rid, "saw_own_write": saw_own_write, "in_atomic": in_atomic,
                          "moved_thread": threading.get_ident() != first_thread}).encode()

    return SuspendingResponse(body(), content_type="application/json")


def fail(request: Any, rid: str) -> SuspendingResponse:
    """Write, suspend, write, then fail: nothing of it may be committed."""

    def body() -> Any:
        Entry.objects.create(rid=rid, step=1)
        yield bridge.sleep(0.001)
        Entry.objects.create(rid=rid, step=2)
        raise RuntimeError("the view failed after suspending")

    return SuspendingResponse(body(), content_type="text/plain")


def hang(request: Any, rid: str) -> SuspendingResponse:
    """Write, then wait on a future nobody completes: only a disconnect ends it."""

    def body() -> Any:
        Entry.objects.create(rid=rid, step=1)
        never: Future[None] = Future()
        with _lock:
            _suspended.add(rid)
        try:
            yield never
            yield b"unreachable"
        finally:
            with _lock:
                _closed.add(rid)

    return SuspendingResponse(body(), content_type="text/plain")


def plain_stream(request: Any) -> StreamingHttpResponse:
    """Django's own streaming response given a future: what happens without the adapter."""
    fut = bridge.sleep(0.001, "done")
    return StreamingHttpResponse(iter([fut, b"after"]), content_type="text/plain")


def naive_txn(request: Any, rid: str) -> StreamingHttpResponse:
    """The body opens a transaction, suspends and continues on Django's thread-bound
    connections: what happens with futures let through but no connection handling."""

    gate = _arrive(request.GET.get("batch", "-"), int(request.GET.get("expect", "1")))

    def body() -> Any:
        t0 = threading.get_ident()
        conn0 = id(connection.connection) if connection.connection else None
        block = transaction.atomic()
        block.__enter__()
        Entry.objects.create(rid=rid, step=1)
        conn1 = id(connection.connection)
        yield gate
        in_atomic = connection.in_atomic_block
        saw = Entry.objects.filter(rid=rid, step=1).count()
        try:
            block.__exit__(None, None, None)
            exit_error = None
        except Exception as exc:
            exit_error = f"{type(exc).__name__}: {exc}"
        yield json.dumps({"moved_thread": threading.get_ident() != t0, "in_atomic_after": in_atomic,
                          "saw_own_write": saw, "same_conn": conn1 == id(connection.connection),
                          "exit_error": exit_error, "had_conn": conn0 is not None}).encode()

    return _FuturesPassThrough(body(), content_type="application/json")


class _FuturesPassThrough(StreamingHttpResponse):
    """The obvious fix for ``make_bytes``: let futures through. Connections stay thread-bound."""

    def make_bytes(self, value: Any) -> Any:
        return value if hasattr(value, "add_done_callback") else super().make_bytes(value)


def state(request: Any) -> JsonResponse:
    writer = sqlite_writer_lock(str(settings.DATABASES["default"]["NAME"]))
    with _lock:
        return JsonResponse({
            "suspended": sorted(_suspended),
            "closed": sorted(_closed),
            "lock_held": writer.locked,
            "lock_waiting": writer.waiting,
        })


_async_batches: dict[str, list[int]] = {}  # batch -> [awaiting now, most awaiting at once]


@transaction.non_atomic_requests  # Django refuses ATOMIC_REQUESTS for async views
async def async_wait(request: Any, key: str) -> JsonResponse:
    """Awaits until ``expect`` views of the batch await at once, or ``bound`` seconds passed.

    Django's WSGI handler runs it with ``async_to_sync`` (its own loop, in a thread),
    so the batch is shared through a lock, not an asyncio primitive.
    """
    batch, expect = request.GET["batch"], int(request.GET["expect"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(request.GET.get("bound", "2"))
    with _lock:
        counts = _async_batches.setdefault(batch, [0, 0])
        counts[0] += 1
        counts[1] = max(counts)
    try:
        while counts[0] < expect and loop.time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        with _lock:
            counts[0] -= 1
    return JsonResponse({"key": key, "most_awaiting_at_once": counts[1]})


def count(request: Any) -> HttpResponse:
    return HttpResponse(str(Entry.objects.count()))


urlpatterns = [
    path("txn/<str:rid>", txn),
    path("fail/<str:rid>", fail),
    path("hang/<str:rid>", hang),
    path("plain-stream", plain_stream),
    path("naive-txn/<str:rid>", naive_txn),
    path("state", state),
    path("count", count),
    path("async-wait/<str:key>", async_wait),
]


def _create_tables() -> None:
    with connection.schema_editor() as editor:
        if Entry._meta.db_table not in connection.introspection.table_names():
            editor.create_model(Entry)
    connection.close()


_create_tables()

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
