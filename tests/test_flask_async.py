"""``async def`` Flask views and ``@suspending_view`` under the real CLI, against a real upstream.

The app is tests/apps/flask_async.py, served by ``python -m wsgiplus`` with
``--threads 2``; its upstream is a WSGI+ server in this process on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_server, wait_for

from wsgiplus.testing import ServerThread

ROOT = Path(__file__).resolve().parent.parent


def upstream_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    name = environ["PATH_INFO"].removeprefix("/items/")
    if name == "missing":
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "no such item"}']
    if name == "broken":
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"name": name}).encode()]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerThread]:
    server = ServerThread(upstream_app, threads=4).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flask_server(upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}",
               UPSTREAM=f"http://127.0.0.1:{upstream.port}")
    args = ["apps.flask_async:app", "--threads", "2", "--no-access-log"]
    with cli_server(args, tmp_path_factory.mktemp("flask_async"), env=env) as server:
        yield server


def get(server: Any, path: str, rid: str = "r") -> httpx.Response:
    return httpx.get(server.url + path, headers={"X-Rid": rid}, timeout=30)


@pytest.mark.parametrize("kind", ["async", "gen", "mv"])
def test_the_view_decides_the_response_after_the_upstream_answered(flask_server: Any, kind: str) -> None:
    r = get(flask_server, f"/{kind}/item/apple?created=1", rid=f"{kind}-1")
    assert r.status_code == 201
    how = {"async": "async", "gen": "gen", "mv": "methodview"}[kind]
    assert r.json() == {"item": {"name": "apple"}, "rid": f"{kind}-1", "path": f"/{kind}/item/apple",
                        "how": how, "hook": "ran", "moved_thread": r.json()["moved_thread"]}
    assert r.headers["X-Upstream-Status"] == "200"  # a header chosen after the suspension
    assert r.headers["X-Rid"] == f"{kind}-1"  # after_request ran on the real response, with g
    endpoint = {"async": "async_item", "gen": "gen_item", "mv": "mv_item"}[kind]
    assert r.headers["X-After"] == f"{endpoint} 201"


@pytest.mark.parametrize("kind", ["async", "gen", "mv"])
def test_upstream_404_becomes_the_apps_404_handler(flask_server: Any, kind: str) -> None:
    r = get(flask_server, f"/{kind}/item/missing", rid="nf")
    assert r.status_code == 404
    assert r.json() == {"error": "not found", "path": f"/{kind}/item/missing", "rid": "nf"}
    assert r.headers["X-After"].endswith(" 404") and r.headers["X-Rid"] == "nf"


@pytest.mark.parametrize("kind", ["async", "gen", "mv"])
def test_upstream_failure_becomes_a_502_from_the_apps_error_handler(flask_server: Any, kind: str) -> None:
    r = get(flask_server, f"/{kind}/item/broken", rid="bg")
    assert r.status_code == 502
    assert r.json() == {"error": "bad gateway", "upstream_status": 503, "rid": "bg"}
    assert r.headers["X-After"].endswith(" 502")


def test_the_session_set_after_an_await_is_saved(flask_server: Any) -> None:
    with httpx.Client(base_url=flask_server.url, timeout=30) as c:
        assert [c.get("/async/session").json()["visits"] for _ in range(3)] == [1, 2, 3]


def test_unhandled_error_after_await_goes_to_the_500_handler_and_teardown(flask_server: Any) -> None:
    log_start = len(flask_server.log)
    r = get(flask_server, "/async/boom", rid="boom")
    assert r.status_code == 500
    assert r.json() == {"error": "custom 500", "rid": "boom"}
    state = httpx.get(flask_server.url + "/state", timeout=30).json()
    # teardown_request ran once, after the response, with the unhandled error
    assert state["teardowns"]["/async/boom RuntimeError"] == 1
    log = "".join(flask_server.log[log_start:])
    assert "async view failed after awaiting" in log  # Flask logged it, as for a sync view


def test_teardown_runs_once_per_request_without_an_error(flask_server: Any) -> None:
    for i in range(3):
        assert get(flask_server, f"/async/item/t{i}").status_code == 200
        assert get(flask_server, "/gen/item/missing").status_code == 404
    state = httpx.get(flask_server.url + "/state", timeout=30).json()["teardowns"]
    assert [state[f"/async/item/t{i} None"] for i in range(3)] == [1, 1, 1]
    assert state["/gen/item/missing None"] >= 3  # a handled 404 is not an error, as in Flask


@pytest.mark.parametrize("kind,n", [("async", 100), ("gen", 40)])
def test_views_awaiting_one_event_on_2_threads_all_complete(flask_server: Any, kind: str, n: int) -> None:
    """The event is set by the n-th view to arrive: on 2 threads, only if waiting holds none.

    ``async``: the issue's barrier, 100 ``async def`` views; ``gen``: ``@suspending_view``.
    """

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(timeout=90, limits=limits) as c:
            return await asyncio.gather(*(
                c.get(f"{flask_server.url}/{kind}/barrier?batch={kind}&n={n}&i={i}",
                      headers={"X-Rid": f"b{i}"})
                for i in range(n)))

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * n
    for i, r in enumerate(responses):
        assert r.json() == {"i": i, "rid": f"b{i}", "hook": "ran", "arrived": n}
        assert r.headers["X-After"] == f"{kind}_barrier 200"


def test_the_same_app_works_blocking_in_the_test_client(upstream: ServerThread,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No WSGI+ (Flask's test client): every coroutine is waited for on the bridge loop."""
    monkeypatch.setenv("UPSTREAM", f"http://127.0.0.1:{upstream.port}")
    from apps import flask_async

    c = flask_async.app.test_client()
    for kind in ("async", "gen", "mv"):
        r = c.get(f"/{kind}/item/pear", headers={"X-Rid": "tc"})
        assert r.status_code == 200 and r.get_json()["item"] == {"name": "pear"}
        assert r.headers["X-After"].endswith(" 200") and r.headers["X-Rid"] == "tc"
        assert c.get(f"/{kind}/item/missing").status_code == 404
        assert c.get(f"/{kind}/item/broken").status_code == 502
    r = c.get("/async/barrier?batch=tc&n=1&i=0")
    assert r.get_json()["arrived"] == 1
    assert c.get("/async/boom").status_code == 500


def test_a_client_that_leaves_cancels_the_coroutine_and_tears_down(flask_server: Any) -> None:
    def state() -> dict[str, Any]:
        return httpx.get(flask_server.url + "/state", timeout=30).json()

    sock = socket.create_connection(("127.0.0.1", flask_server.port), timeout=10)
    sock.sendall(b"GET /async/hang/h1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert wait_for(lambda: "h1" in state()["hanging"])
    sock.close()
    assert wait_for(lambda: "h1" in state()["cancelled"])  # CancelledError reached the view
    # the request context was popped (teardown_request ran once) although nothing was sent
    assert wait_for(lambda: sum(v for k, v in state()["teardowns"].items()
                                if k.startswith("/async/hang/h1 ")) == 1)


def test_a_decorator_that_transforms_an_async_views_result_gets_a_clear_error(flask_server: Any) -> None:
    log_start = len(flask_server.log)
    r = get(flask_server, "/async/transformed", rid="tr")
    assert r.status_code == 500 and r.json() == {"error": "custom 500", "rid": "tr"}
    assert wait_for(lambda: "ensure_sync(view)(...) unchanged" in "".join(flask_server.log[log_start:]))
