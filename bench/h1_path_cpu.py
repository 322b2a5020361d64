"""CPU per request of the HTTP/1.1 path alone: parser -> connection -> runner -> stream -> framing.

No sockets, no wrk, no thread hand-offs: the loop's and the pool's work run in this thread
through the fakes of tests/fakes.py, so the figure is the server's own Python per request,
and two trees can be compared on a shared, noisy machine::

    python bench/h1_path_cpu.py                                   # the tree wsgiplus imports from
    git archive main src | tar -x -C /tmp/main
    PYTHONPATH=/tmp/main/src python bench/h1_path_cpu.py          # another tree, same script

Alternate the two a few times and compare the best figures: a shared machine moves them by
several microseconds between runs.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes import FakeLoop, FakePool, FakeTransport, drive  # noqa: E402

from wsgiplus.runner.wsgi import environ_template  # noqa: E402
from wsgiplus.server.core import HTTPConnection, Server  # noqa: E402
from wsgiplus.shell.config import Config  # noqa: E402

REQUEST = b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


def hello(environ: dict, start_response: Any) -> list[bytes]:
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def generator(environ: dict, start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"Hello, "
    yield b"world!"


def per_request(app: Any, n: int) -> float:
    """Microseconds of CPU per request over ``n`` keep-alive requests on one connection."""
    server = Server(app, Config(access_log=False))
    server.loop = FakeLoop()  # type: ignore[assignment]
    server.pool = FakePool()  # type: ignore[assignment]
    conn = HTTPConnection(server, environ_template("t", "80", "http", "", False))
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    loop, pool = server.loop, server.pool
    for _ in range(200):
        conn.data_received(REQUEST)
        drive(loop, pool)  # type: ignore[arg-type]
        transport.out.clear()
    gc.collect()
    t0 = time.process_time()
    for _ in range(n):
        conn.data_received(REQUEST)
        drive(loop, pool)  # type: ignore[arg-type]
        transport.out.clear()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    logging.getLogger("wsgiplus").setLevel(logging.WARNING)
    for name, app in (("hello", hello), ("generator", generator)):
        best = min(per_request(app, 20_000) for _ in range(5))
        print(f"{name:10s} {best:6.2f} us/request (best of 5 x 20,000)")


if __name__ == "__main__":
    main()
