"""A real Django project (SQLite, ATOMIC_REQUESTS=True) whose views suspend, served by the CLI.

The project is tests/django_project; the server runs in a subprocess (Django's
settings are per process) with 2 threads, and the test reads the SQLite file
itself to check what was committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = {"Accept-Encoding": "identity"}  # GZipMiddleware would otherwise wrap the body


class DjangoServer:
    def __init__(self, url: str, db: Path, proc: subprocess.Popen[str], log: list[str]) -> None:
        self.url, self.db, self.proc, self.log = url, db, proc, log

    def rows(self, rid_prefix: str) -> dict[str, list[int]]:
        with sqlite3.connect(self.db) as db:
            out: dict[str, list[int]] = {}
            for rid, step in db.execute(
                "SELECT rid, step FROM django_project_entry WHERE rid LIKE ? ORDER BY rid, step",
                (rid_prefix + "%",),
            ):
                out.setdefault(rid, []).append(step)
            return out

    def state(self) -> dict[str, Any]:
        return httpx.get(self.url + "/state", headers=IDENTITY, timeout=10).json()


@pytest.fixture(scope="module")
def django_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoServer]:
    tmp = tmp_path_factory.mktemp("django")
    db = tmp / "db.sqlite3"
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}",
               DJANGO_PROJECT_DB=str(db))
    args = ["django_project.site:application", "--threads", "2", "--no-access-log"]
    with cli_server(args, tmp, env=env) as server:
        yield DjangoServer(server.url, db, server.proc, server.log)


def get_all(urls: list[str], headers: dict[str, str] = IDENTITY) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(urls))
        async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.get(u) for u in urls))

    return asyncio.run(main())


def test_concurrent_atomic_requests_write_suspend_write_commit(django_server: DjangoServer) -> None:
    """40 requests on 2 threads, each: write, suspend, write, commit - all rows right, no errors.

    Every request's first write happens before any may go on (a gate opens once
    all 40 reached the view): on 2 threads that only works if waiting holds none.
    """
    n = 40
    log_start = len(django_server.log)
    urls = [f"{django_server.url}/txn/c{i:02d}?batch=concurrent&expect={n}" for i in range(n)]
    responses = get_all(urls)
    assert [r.status_code for r in responses] == [200] * n, [r.text[:200] for r in responses]
    bodies = [r.json() for r in responses]
    for i, body in enumerate(bodies):
        # the uncommitted first write is visible after resuming: same connection, same transaction
        assert body == {"rid": f"c{i:02d}", "saw_own_write": 1, "in_atomic": True,
                        "moved_thread": body["moved_thread"]}
    assert django_server.rows("c") == {f"c{i:02d}": [1, 2] for i in range(n)}
    errors = [line for line in django_server.log[log_start:]
              if re.search(r"locked|thread id|Error|Traceback", line)]
    assert errors == []


def test_error_after_suspension_rolls_back(django_server: DjangoServer) -> None:
    r = httpx.get(django_server.url + "/fail/f1", headers=IDENTITY, timeout=30)
    assert r.status_code == 500
    assert django_server.rows("f1") == {}
    # the lock and connection were given back: the next transaction goes through
    ok = httpx.get(django_server.url + "/txn/f1-after", headers=IDENTITY, timeout=30)
    assert ok.status_code == 200 and django_server.rows("f1-after") == {"f1-after": [1, 2]}


def test_disconnect_while_suspended_rolls_back_and_frees_the_writer_lock(
    django_server: DjangoServer,
) -> None:
    host, port = django_server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /hang/h1 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: identity\r\n\r\n")
    assert wait_for(lambda: "h1" in django_server.state()["suspended"])
    assert django_server.state()["lock_held"] is True  # it holds SQLite's write turn
    sock.close()
    assert wait_for(lambda: "h1" in django_server.state()["closed"])  # the view's generator was closed
    assert wait_for(lambda: django_server.state()["lock_held"] is False)
    assert django_server.rows("h1") == {}  # its write was rolled back
    ok = httpx.get(django_server.url + "/txn/h1-after", headers=IDENTITY, timeout=30)
    assert ok.status_code == 200 and django_server.rows("h1-after") == {"h1-after": [1, 2]}


def test_gzip_middleware_wrapping_the_body_still_gets_it_right(django_server: DjangoServer) -> None:
    """GZipMiddleware replaces streaming_content: futures are then waited for in place."""
    r = httpx.get(django_server.url + "/txn/gz1", headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.json()["saw_own_write"] == 1
    assert django_server.rows("gz1") == {"gz1": [1, 2]}


def test_plain_streaming_response_turns_a_future_into_text(django_server: DjangoServer) -> None:
    """Why the adapter exists (1): Django's own class makes bytes of every item, futures too."""
    r = httpx.get(django_server.url + "/plain-stream", headers=IDENTITY, timeout=30)
    assert r.status_code == 200
    assert re.fullmatch(rb"<Future at 0x[0-9a-f]+ state=\w+>after", r.content)


def test_without_the_adapter_suspended_transactions_break(django_server: DjangoServer) -> None:
    """Why the adapter exists (2): futures let through, but connections are the thread's.

    Four bodies each open a transaction, write and wait until all four have: on
    two threads, two of them share a thread's connection (or wait on SQLite's
    lock with the thread held). Not every request can come out right.
    """
    n = 4
    urls = [f"{django_server.url}/naive-txn/n{i}?batch=naive&expect={n}" for i in range(n)]
    responses = get_all(urls)
    good = 0
    for r in responses:
        if r.status_code == 200:
            body = json.loads(r.content)
            good += body["saw_own_write"] == 1 and body["exit_error"] is None and body["same_conn"]
    assert good < n, [r.text[:300] for r in responses]


def test_a_request_that_leaves_while_queued_for_the_writer_turn_gives_it_up(
    django_server: DjangoServer,
) -> None:
    """h2 holds SQLite's writer turn; q2 queues behind it and leaves; when h2 leaves too,
    the turn goes to the next request, not to the departed q2."""
    host, port = django_server.url.removeprefix("http://").rsplit(":", 1)
    holder = socket.create_connection((host, int(port)), timeout=10)
    holder.sendall(b"GET /hang/h2 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: identity\r\n\r\n")
    assert wait_for(lambda: "h2" in django_server.state()["suspended"])
    queued = socket.create_connection((host, int(port)), timeout=10)
    queued.sendall(b"GET /txn/q2 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: identity\r\n\r\n")
    # q2 waits for the turn without a thread: the server still answers on its 2 threads
    assert wait_for(lambda: django_server.state()["lock_waiting"] == 1)
    queued.close()
    assert wait_for(lambda: django_server.state()["lock_waiting"] == 0)  # its turn was cancelled
    assert django_server.state()["lock_held"] is True
    holder.close()
    assert wait_for(lambda: django_server.state()["lock_held"] is False)
    ok = httpx.get(django_server.url + "/txn/q2-after", headers=IDENTITY, timeout=30)
    assert ok.status_code == 200
    assert django_server.rows("h2") == {} and django_server.rows("q2-after") == {"q2-after": [1, 2]}
    assert "q2" not in django_server.rows("q2")  # it never got to write


def test_async_views_hold_a_thread_under_djangos_wsgi_handler(django_server: DjangoServer) -> None:
    """Why Django async views do not suspend (docs/writing-apps.md): the WSGI handler runs them
    with ``async_to_sync``, which blocks the pool thread for the whole view. Three views wait
    (bounded) for all three to be awaiting at once: on 2 threads that never happens."""
    urls = [f"{django_server.url}/async-wait/a{i}?batch=hold&expect=3&bound=2" for i in range(3)]
    responses = get_all(urls)
    assert [r.status_code for r in responses] == [200] * 3
    assert max(r.json()["most_awaiting_at_once"] for r in responses) <= 2
