"""A Flask app with ``async def`` views and ``@suspending_view`` views calling a real upstream.

``UPSTREAM`` (env) is the upstream's base URL; it is read on first use. The
views decide status and headers from the upstream's answer, and every Flask
hook is wired to leave a trace: ``before_request`` (sync and async) sets
``g``, ``after_request`` copies it into headers, ``teardown_request`` counts
into ``/state``, error handlers shape 404, 502 and 500.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections import Counter
from typing import Any

import httpx
from flask import Flask, abort, current_app, g, jsonify, request, session
from flask.views import MethodView

from wsgiplus import bridge
from wsgiplus.contrib.flask import WSGIPlus, suspending_view

app = Flask(__name__)
app.secret_key = "test only"
WSGIPlus(app)

_client: httpx.AsyncClient | None = None
teardowns: Counter[str] = Counter()
_lock = threading.Lock()


def client() -> httpx.AsyncClient:
    """One AsyncClient per process, used only from coroutines on the bridge loop."""
    global _client
    if _client is None:
        _client = httpx.AsyncClient(base_url=os.environ["UPSTREAM"], timeout=30,
                                    limits=httpx.Limits(max_connections=200))
        bridge.on_shutdown(_client.aclose)
    return _client


class UpstreamFailed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@app.before_request
def before() -> None:
    g.rid = request.headers.get("X-Rid", "-")
    g.thread_before = threading.get_ident()


@app.before_request
async def async_before() -> None:  # run on the bridge loop, the thread waits: a hook, not the view
    await asyncio.sleep(0)
    g.async_hook = "ran"


@app.after_request
def after(response: Any) -> Any:
    response.headers["X-Rid"] = g.rid
    response.headers["X-After"] = f"{request.endpoint} {response.status_code}"
    return response


@app.teardown_request
def teardown(exc: BaseException | None) -> None:
    with _lock:
        teardowns[f"{request.path} {type(exc).__name__ if exc else None}"] += 1


@app.errorhandler(404)
def not_found(e: Any) -> Any:
    return jsonify(error="not found", path=request.path, rid=g.get("rid")), 404


@app.errorhandler(UpstreamFailed)
def upstream_failed(e: UpstreamFailed) -> Any:
    return jsonify(error="bad gateway", upstream_status=e.status, rid=g.rid), 502


@app.errorhandler(500)
def server_error(e: Any) -> Any:
    return jsonify(error="custom 500", rid=g.get("rid")), 500


def decide(r: httpx.Response, how: str) -> Any:
    """The response, chosen from the upstream's answer after the suspension."""
    if r.status_code == 404:
        abort(404)
    if r.status_code >= 500:
        raise UpstreamFailed(r.status_code)
    moved = threading.get_ident() != g.thread_before
    return (jsonify(item=r.json(), rid=g.rid, path=request.path, how=how, hook=g.async_hook,
                    moved_thread=moved),
            201 if request.args.get("created") else 200,
            {"X-Upstream-Status": str(r.status_code)})


@app.get("/async/item/<name>")
async def async_item(name: str) -> Any:
    r = await client().get(f"/items/{name}")
    return decide(r, "async")


@app.get("/gen/item/<name>")
@suspending_view
def gen_item(name: str) -> Any:
    fut = bridge.run(client().get(f"/items/{name}"))
    yield fut
    return decide(fut.result(), "gen")


class ItemView(MethodView):
    async def get(self, name: str) -> Any:
        r = await client().get(f"/items/{name}")
        return decide(r, "methodview")


app.add_url_rule("/mv/item/<name>", view_func=ItemView.as_view("mv_item"))


@app.get("/async/session")
async def async_session() -> Any:
    await asyncio.sleep(0)
    session["visits"] = session.get("visits", 0) + 1  # saved by Flask after the view, as usual
    return {"visits": session["visits"]}


@app.get("/async/boom")
async def async_boom() -> Any:
    await asyncio.sleep(0)
    raise RuntimeError("async view failed after awaiting")


# -- the barrier: n requests wait on one asyncio.Event, set when the n-th arrives -----------

_barriers: dict[str, tuple[asyncio.Event, list[int]]] = {}


async def _barrier(batch: str, n: int) -> int:
    event, arrived = _barriers.setdefault(batch, (asyncio.Event(), [0]))  # the bridge loop's only
    arrived[0] += 1
    if arrived[0] == n:
        event.set()
    await asyncio.wait_for(event.wait(), 60)  # bounded: a request that waits alone fails
    return arrived[0]


@app.get("/async/barrier")
async def async_barrier() -> Any:
    arrived = await _barrier(request.args["batch"], int(request.args["n"]))
    return jsonify(i=int(request.args["i"]), rid=g.rid, hook=g.async_hook, arrived=arrived)


@app.get("/gen/barrier")
@suspending_view
def gen_barrier() -> Any:
    fut = bridge.run(_barrier(request.args["batch"], int(request.args["n"])))
    yield fut
    return jsonify(i=int(request.args["i"]), rid=g.rid, hook=g.async_hook, arrived=fut.result())


# -- a client that leaves: the coroutine is cancelled, the context torn down ------------------

cancelled: list[str] = []
hanging: list[str] = []


@app.get("/async/hang/<key>")
async def async_hang(key: str) -> Any:
    hanging.append(key)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancelled.append(key)
        raise
    return "not reached"


# -- a decorator that transforms an async view's return value: a clear error ------------------

def transforming(view: Any) -> Any:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return {"wrapped": repr(current_app.ensure_sync(view)(*args, **kwargs))}

    return wrapper


@app.get("/async/transformed")
@transforming
async def async_transformed() -> Any:
    return "x"


@app.get("/state")
def state() -> Any:
    with _lock:
        return jsonify(teardowns=dict(teardowns), hanging=hanging, cancelled=cancelled)
