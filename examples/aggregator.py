"""An API aggregator: one request fans out to three upstreams at once and merges their answers.

    UPSTREAMS=http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003 \\
        wsgiplus examples.aggregator:app --threads 4

``GET /any/path?q=1`` asks every upstream for the same path concurrently
(``bridge.gather``: one yield for all three) and answers
``{"results": {url: json}, "errors": {url: message}}``; a failing upstream
is reported, not fatal. Decorated with ``portable``: it also runs on plain
WSGI servers (tests/test_portability.py runs it on four).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx

from wsgiplus import bridge
from wsgiplus.compat import portable

UPSTREAMS = [u.rstrip("/") for u in os.environ.get(
    "UPSTREAMS", "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003").split(",") if u]

client = httpx.AsyncClient(timeout=httpx.Timeout(10.0),
                           limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
bridge.on_shutdown(client.aclose)


async def fetch_json(url: str) -> Any:
    resp = await client.get(url)
    resp.raise_for_status()
    return resp.json()


@portable
def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    target = environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        target += "?" + environ["QUERY_STRING"]
    fut = bridge.gather(*(fetch_json(base + target) for base in UPSTREAMS), return_exceptions=True)
    yield fut
    merged: dict[str, Any] = {"results": {}, "errors": {}}
    for base, result in zip(UPSTREAMS, fut.result(), strict=True):
        if isinstance(result, BaseException):
            merged["errors"][base] = f"{type(result).__name__}: {result}"
        else:
            merged["results"][base] = result
    body = json.dumps(merged).encode()
    status = "200 OK" if merged["results"] else "502 Bad Gateway"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    yield body
