"""A streaming upload: the body goes to disk as it arrives, holding no thread while the client is slow.

    wsgiplus examples.upload:app --threads 2 --max-body-size 4g

* ``PUT /files/NAME`` (or POST) with any body: written to ``$UPLOAD_DIR/NAME``
  (default: a temp directory) chunk by chunk; answers ``{"name", "bytes", "sha256"}``.
* ``GET /stats``: uploads in progress right now.

The app is marked with ``wsgiplus.streaming.streaming_input``: it is called
when the request head arrives and reads the body through futures, so 200
clients trickling bodies in hold no pool thread, and memory stays flat
however large the file is (the server stops reading the socket while the app
has not taken what was read: at most ``write_buffer_high`` waits in memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from wsgiplus.streaming import streaming_input

UPLOAD_DIR = os.environ.get("UPLOAD_DIR") or tempfile.mkdtemp(prefix="wsgiplus-upload-")
_NAME = re.compile(r"^/files/([A-Za-z0-9._-]{1,100})$")
_lock = threading.Lock()
_in_progress = 0


def _json(start_response: Any, status: str, data: object) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@streaming_input(when=lambda environ: environ["PATH_INFO"].startswith("/files/"))
def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/stats":
        return _json(start_response, "200 OK", {"in_progress": _in_progress})
    match = _NAME.match(path)
    if match is None or environ["REQUEST_METHOD"] not in ("PUT", "POST"):
        return _json(start_response, "404 Not Found", {"error": "PUT /files/NAME"})
    return store(environ, start_response, match.group(1))


def store(environ: dict[str, Any], start_response: Any, name: str) -> Iterator[Any]:
    global _in_progress
    inp = environ["wsgiplus.input"]
    digest = hashlib.sha256()
    size = 0
    target = os.path.join(UPLOAD_DIR, name)
    with _lock:
        _in_progress += 1
    try:
        with open(target + ".part", "wb") as out:
            while True:
                fut = inp.receive(256 * 1024)
                yield fut  # no thread while the client is slow
                chunk = fut.result()
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        os.replace(target + ".part", target)
    finally:
        with _lock:
            _in_progress -= 1
        if os.path.exists(target + ".part"):
            os.unlink(target + ".part")
    yield from _json(start_response, "201 Created", {"name": name, "bytes": size,
                                                     "sha256": digest.hexdigest()})
