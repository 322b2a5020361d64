"""Real Flask views that suspend on futures: stream_with_context across many suspended requests."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from typing import Any

from conftest import get_many
from flask import Flask, Response, current_app, g, request, stream_with_context

from wsgiplus import bridge
from wsgiplus.contrib.flask import portable_app, suspending


def make_app(n: int) -> tuple[Flask, list[Future[str]]]:
    """Every view's future completes only when ``n`` requests wait on one (or fails after 30 s)."""
    app = Flask("suspend_test")
    waiting: list[Future[str]] = []
    lock = threading.Lock()

    def arrive() -> Future[str]:
        fut: Future[str] = Future()
        with lock:
            waiting.append(fut)
            if len(waiting) == n:
                for f in waiting:
                    f.set_result("all-waited")
            elif len(waiting) == 1:
                def give_up(_: Any) -> None:
                    with lock:
                        for f in waiting:
                            if not f.done():
                                f.set_exception(RuntimeError(f"only {len(waiting)} of {n} waited"))

                bridge.sleep(30).add_done_callback(give_up)
        return fut

    @app.before_request
    def mark() -> None:
        g.who = request.args.get("who")

    @app.get("/stream/<int:i>")
    def stream(i: int) -> Response:
        def gen() -> Any:
            yield f"{i}:".encode()
            fut = arrive()
            yield fut
            yield json.dumps({"i": i, "arg": request.args["who"], "g": g.who,
                              "app": current_app.name, "result": fut.result()}).encode()

        return Response(stream_with_context(gen()), mimetype="application/json")

    @app.get("/short/<int:i>")
    @suspending(mimetype="text/plain", headers={"X-Who": "short"})
    def short(i: int) -> Any:
        fut = bridge.sleep(0.001, i * 2)
        yield fut
        yield f"{request.path} {g.who} {fut.result()}"

    return app, waiting


def test_100_stream_with_context_responses_suspended_at_once_on_2_threads(serve: Any) -> None:
    n = 100
    app, waiting = make_app(n)
    server = serve(app, threads=2)
    results = get_many(server.port, [f"/stream/{i}?who=r{i}" for i in range(n)], timeout=60)
    assert len(waiting) == n
    for i, (status, body) in enumerate(results):
        assert status == 200
        head, _, rest = body.partition(b":")
        assert head == str(i).encode()
        assert json.loads(rest) == {"i": i, "arg": f"r{i}", "g": f"r{i}", "app": "suspend_test",
                                    "result": "all-waited"}


def test_suspending_decorator(serve: Any) -> None:
    app, _ = make_app(1)
    server = serve(app, threads=2)
    results = get_many(server.port, [f"/short/{i}?who=s{i}" for i in range(20)])
    assert results == [(200, f"/short/{i} s{i} {i * 2}".encode()) for i in range(20)]


def test_flask_test_client_waits_in_place_with_portable_app() -> None:
    """The test client is a plain WSGI caller: without the shim the future would be the body."""
    app, _ = make_app(1)
    client = portable_app(app).test_client()
    r = client.get("/short/21?who=tc")
    assert r.status_code == 200 and r.headers["X-Who"] == "short"
    assert r.get_data() == b"/short/21 tc 42"
    r = client.get("/stream/5?who=tc")
    assert json.loads(r.get_data().partition(b":")[2])["result"] == "all-waited"
