"""A reverse proxy: every request is forwarded with ``httpx.AsyncClient`` through the bridge.

    UPSTREAM=http://127.0.0.1:8001 wsgiplus examples.proxy:app --threads 4

While the upstream takes its time, the request is suspended and holds no
thread: 4 threads serve hundreds of requests in flight. The same app also
runs (one request per thread) on wsgiref, waitress or gunicorn, thanks to
``portable``. The heart of it is three lines:

    fut = bridge.run(forward(...))
    yield fut
    status, headers, body = fut.result()
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

from wsgiplus import bridge
from wsgiplus.compat import portable

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8001").rstrip("/")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}

# One client for the process, used only on the bridge's loop; no cap on connections
# (httpx's default of 100 would queue the 101st request behind the others).
client = httpx.AsyncClient(
    timeout=httpx.Timeout(30.0),
    limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
)
bridge.on_shutdown(client.aclose)


def request_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [(key[5:].replace("_", "-").lower(), value) for key, value in environ.items()
               if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP]
    if environ.get("CONTENT_TYPE"):
        headers.append(("content-type", environ["CONTENT_TYPE"]))
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    remote = environ.get("REMOTE_ADDR", "")
    headers = [(k, v) for k, v in headers if k != "x-forwarded-for"]
    headers.append(("x-forwarded-for", f"{forwarded}, {remote}" if forwarded else remote))
    return headers


async def forward(method: str, url: str, headers: list[tuple[str, str]],
                  body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """Runs on the bridge loop: send upstream, read the raw (still encoded) answer."""
    req = client.build_request(method, url, headers=headers, content=body or None)
    resp = await client.send(req, stream=True)
    try:
        raw = b"".join([chunk async for chunk in resp.aiter_raw()])
    finally:
        await resp.aclose()
    out = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in HOP_BY_HOP]
    return resp.status_code, resp.reason_phrase, out, raw


@portable
def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    url = UPSTREAM + environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        url += "?" + environ["QUERY_STRING"]
    fut = bridge.run(forward(environ["REQUEST_METHOD"], url, request_headers(environ), body))
    yield fut
    try:
        status, reason, headers, content = fut.result()
    except httpx.HTTPError as exc:
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
        yield f"upstream error: {type(exc).__name__}\n".encode()
        return
    start_response(f"{status} {reason}", headers + [("Content-Length", str(len(content)))])
    yield content
