"""A reverse proxy: every request is forwarded with ``httpx.AsyncClient`` through the bridge.

    UPSTREAM=http://127.0.0.1:8001 wsgiplus examples.proxy:app --threads 4

While the upstream takes its time, the request is suspended and holds no
thread: 4 threads serve hundreds of requests in flight. The same app also
runs (one request per thread) on wsgiref, waitress or gunicorn, thanks to
``portable``. The heart of it is three lines:

    fut = bridge.run(upstream.start(...))
    yield fut
    status, reason, headers, body, done = fut.result()

Small answers take that one suspension; large ones are relayed 64 KiB at a
time, one suspension each, so a proxied download never sits whole in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

from wsgiplus import bridge
from wsgiplus.compat import portable

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8001").rstrip("/")

# not forwarded either way (content-length is re-added from the upstream's answer)
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


CHUNK = 64 * 1024


class Upstream:
    """One upstream response being relayed; every method is a coroutine for the bridge loop."""

    def __init__(self) -> None:
        self.resp: httpx.Response | None = None
        self.raw: Any = None

    async def start(self, method: str, url: str, headers: list[tuple[str, str]],
                    body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes, bool]:
        """Send upstream; return the head and up to CHUNK bytes of the (still encoded) body.

        A small answer is complete after this one suspension; a large one is relayed
        CHUNK by CHUNK by ``more()``, so a proxied download never sits whole in memory.
        """
        req = client.build_request(method, url, headers=headers, content=body or None)
        self.resp = await client.send(req, stream=True)
        self.raw = self.resp.aiter_raw()
        head = [(k, v) for k, v in self.resp.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        length = self.resp.headers.get("content-length")
        if length is not None:
            head.append(("Content-Length", length))
        first, done = await self.more()
        return self.resp.status_code, self.resp.reason_phrase, head, first, done

    async def more(self) -> tuple[bytes, bool]:
        """The next up to CHUNK bytes, and whether the body is finished."""
        buf = bytearray()
        while len(buf) < CHUNK:
            try:
                buf += await self.raw.__anext__()
            except StopAsyncIteration:
                await self.close()
                return bytes(buf), True
        return bytes(buf), False

    async def close(self) -> None:
        if self.resp is not None:
            await self.resp.aclose()


@portable
def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    url = UPSTREAM + environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        url += "?" + environ["QUERY_STRING"]
    upstream = Upstream()
    fut = bridge.run(upstream.start(environ["REQUEST_METHOD"], url, request_headers(environ), body))
    yield fut
    try:
        status, reason, headers, chunk, done = fut.result()
    except httpx.HTTPError as exc:
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
        yield f"upstream error: {type(exc).__name__}\n".encode()
        return
    start_response(f"{status} {reason}", headers)
    try:
        yield chunk
        while not done:
            fut = bridge.run(upstream.more())
            yield fut
            chunk, done = fut.result()
            yield chunk
    finally:
        if not done:  # the client left (or the upstream broke) mid-body: release the upstream
            bridge.run(upstream.close())
