"""What metrics cost a request: the one hook (``RequestStats.observe``) timed in a loop.

    python bench/metrics_cost.py

Prints nanoseconds per call (best of 5): the hook alone, prometheus_client's own
Counter + Histogram per request for comparison, the hook with statsd (one UDP
datagram to a local socket), and the once-a-second multiprocess flush.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from types import SimpleNamespace

from wsgiplus.shell.metrics import RequestStats, StatsdClient


def per_call(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e9


def main() -> None:
    framer = SimpleNamespace(status_code=200, sent=13)
    runner = SimpleNamespace(method="GET", framer=framer, status="200 OK", started_at=time.monotonic())
    stats = RequestStats()
    print(f"hook (RequestStats.observe):      {per_call(lambda: stats.observe(runner), 200_000):7.0f} ns/request")
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    counter = Counter("c", "c", ("method", "status"), registry=registry)
    histogram = Histogram("h", "h", registry=registry)

    def direct() -> None:  # what the hook avoids: prometheus_client objects on the request path
        counter.labels("GET", "200").inc()
        histogram.observe(time.monotonic() - runner.started_at)

    print(f"(prometheus_client Counter + Histogram: {per_call(direct, 200_000):5.0f} ns/request, for comparison)")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    with_statsd = RequestStats(StatsdClient(f"127.0.0.1:{sink.getsockname()[1]}", "app"))
    print(f"hook + statsd datagram:           {per_call(lambda: with_statsd.observe(runner), 50_000):7.0f} ns/request")
    sink.close()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
    from wsgiplus.shell.metrics import MultiprocessExporter

    server = SimpleNamespace(active=0, suspensions=SimpleNamespace(count=0), connections=set(),
                             pool=SimpleNamespace(size=8, busy=lambda: 0, queued=lambda: 0),
                             stopping=False, bytes_in=0, bytes_out=0)
    exporter = MultiprocessExporter(server, stats)

    def flush() -> None:
        stats.observe(runner)
        server.bytes_in += 100
        exporter.flush()

    print(f"multiprocess flush (once a second): {per_call(flush, 2_000) / 1000:5.1f} us/flush")


if __name__ == "__main__":
    main()
