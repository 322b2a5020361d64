"""A Flask app whose views suspend instead of holding a thread.

    wsgiplus examples.flask_app:app --threads 2

* ``GET /hello/<name>?ms=200``: waits ``ms`` milliseconds (a bridge timer, no
  thread held), then greets - ``request``, ``g`` and ``current_app`` are all
  still right after the resume, on whatever thread it happens.
* ``GET /square/<n>``: runs a blocking function on the bridge's executor
  (``offload``) and streams the answer with plain ``stream_with_context``.

``portable_app`` makes the same app correct on Flask's test client and on
plain WSGI servers, where the futures are waited for in place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, current_app, g, request, stream_with_context

from wsgiplus import bridge
from wsgiplus.contrib.flask import portable_app, suspending

app = portable_app(Flask(__name__))


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
