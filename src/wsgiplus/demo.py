"""The embedded example app that ``wsgiplus`` serves when no app is named.

``/`` says hello; ``/wait?seconds=2`` suspends on a timer future for that long
without holding a thread (try it with many concurrent clients and
``--threads 1``); ``/stream`` sends five chunks, suspending between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from . import bridge


def _timer_future(seconds: float) -> Any:
    return bridge.sleep(seconds, seconds)  # a timer on the bridge's loop: no thread waits


def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    plus = "wsgiplus.version" in environ
    if path == "/wait":
        seconds = min(float(query.get("seconds", ["1"])[0]), 60.0)
        fut = _timer_future(seconds)
        if plus:
            yield fut  # the thread goes back to the pool here
        waited = fut.result()  # blocks only on a plain WSGI server
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield f"waited {waited}s without holding a thread\n".encode()
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(5):
            yield f"chunk {i}\n".encode()
            fut = _timer_future(0.2)
            if plus:
                yield fut
            fut.result()
    elif path == "/":
        body = (
            b"Hello from WSGI+!\n"
            b"Try /wait?seconds=2 (suspends without holding a thread) and /stream.\n"
        )
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        yield body
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        yield b"not found\n"


application = app
