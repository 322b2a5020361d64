"""A Flask app whose views suspend instead of holding a thread.

    wsgiplus examples.flask_app:app --threads 2

* ``GET /hello/<name>?ms=200``: waits ``ms`` milliseconds (a bridge timer, no
  thread held), then greets - ``request``, ``g`` and ``current_app`` are all
  still right after the resume, on whatever thread it happens.
* ``GET /square/<n>``: runs a blocking function on the bridge's executor
  (``offload``) and streams the answer with plain ``stream_with_context``.
* ``GET /temp/<city>``: an ``async def`` view (``WSGIPlus(app)``): awaits on the
  bridge loop holding no thread, then decides - 404 for an unknown city,
  or JSON with a ``Cache-Control`` header.

On other servers the ``async def`` view is waited for on the bridge loop, and
``portable_app`` makes the same app correct on Flask's test client and on
plain WSGI servers, where the futures are waited for in place.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, current_app, g, request, stream_with_context

from wsgiplus import bridge
from wsgiplus.contrib.flask import WSGIPlus, portable_app, suspending

app = portable_app(Flask(__name__))
WSGIPlus(app)


@app.before_request
def remember() -> None:
    g.started = time.monotonic()


@app.get("/hello/<name>")
@suspending(mimetype="application/json")
def hello(name: str) -> Iterator[Any]:
    ms = int(request.args.get("ms", "200"))
    yield bridge.sleep(ms / 1000)
    yield json.dumps({"hello": name, "app": current_app.name, "path": request.path,
                      "waited_ms": round((time.monotonic() - g.started) * 1000)})


def slow_square(n: int) -> int:
    time.sleep(0.05)  # a blocking library call
    return n * n


@app.get("/square/<int:n>")
def square(n: int) -> Response:
    def body() -> Iterator[Any]:
        fut = bridge.offload(slow_square, n)
        yield fut
        yield f"{request.view_args['n']}^2 = {fut.result()}\n".encode()

    return Response(stream_with_context(body()), mimetype="text/plain")


CELSIUS = {"paris": 12, "oslo": -3}


@app.get("/temp/<city>")
async def temp(city: str) -> Any:
    await asyncio.sleep(int(request.args.get("ms", "50")) / 1000)  # an upstream call goes here
    if city not in CELSIUS:
        abort(404)
    return {"city": city, "celsius": CELSIUS[city]}, 200, {"Cache-Control": "max-age=60"}
