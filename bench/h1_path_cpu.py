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


def per_request(app: Any, n: int, conns: int = 1, access_log: str | None = None) -> float:
    """Microseconds of CPU per request over ``n`` keep-alive requests on ``conns`` connections.

    ``conns`` connections get one request each before the loop and the pool run (as one loop
    iteration under load sees several). ``access_log``: the default access log on, written to
    that file (``setup_logging`` as the CLI does it), else off.
    """
    config = Config(access_log=access_log is not None, access_logfile=access_log)
    if access_log is not None:
        from wsgiplus.shell.logconfig import setup_logging

        setup_logging(config)
    server = Server(app, config)
    server.loop = FakeLoop()  # type: ignore[assignment]
    server.pool = FakePool()  # type: ignore[assignment]
    pairs = []
    for _ in range(conns):
        conn = HTTPConnection(server, environ_template("t", "80", "http", "", False))
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        pairs.append((conn, transport))
    loop, pool = server.loop, server.pool

    def rounds(count: int) -> None:
        for _ in range(count):
            for conn, _t in pairs:
                conn.data_received(REQUEST)
            drive(loop, pool)  # type: ignore[arg-type]
            for _c, transport in pairs:
                transport.out.clear()

    rounds(max(1, 200 // conns))
    gc.collect()
    count = max(1, n // conns)
    t0 = time.process_time()
    rounds(count)
    spent = time.process_time() - t0
    if access_log is not None:
        logging.getLogger("wsgiplus.access").handlers[0].flush()
    return spent / (count * conns) * 1e6


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=1, help="requests per loop round (default 1)")
    parser.add_argument("--access-log", action="store_true",
                        help="also measure hello with the default access log, to a temporary file")
    args = parser.parse_args()
    logging.getLogger("wsgiplus").setLevel(logging.WARNING)
    cases: list[tuple[str, Any, str | None]] = [("hello", hello, None), ("generator", generator, None)]
    tmp = None
    if args.access_log:
        tmp = tempfile.NamedTemporaryFile(prefix="wsgiplus-access-", suffix=".log")
        cases.append(("hello+log", hello, tmp.name))
    for name, app, target in cases:
        best = min(per_request(app, 20_000, args.conns, target) for _ in range(5))
        print(f"{name:10s} {best:6.2f} us/request (best of 5 x 20,000, {args.conns} conn/round)")
        if target is not None:
            logging.getLogger("wsgiplus").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
