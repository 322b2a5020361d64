"""The metrics hook and collector on their own: no sockets, no processes."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from wsgiplus.shell.metrics import BUCKETS, RequestStats, StatusListener

parser = pytest.importorskip("prometheus_client.parser")


def runner(method: str = "GET", status: int | None = 200, text: str | None = None, took: float = 0.002) -> SimpleNamespace:
    framer = SimpleNamespace(status_code=status, sent=5) if status is not None else None
    return SimpleNamespace(method=method, framer=framer, status=text, started_at=time.monotonic() - took)


def test_observe_counts_by_method_and_status_and_buckets_durations() -> None:
    stats = RequestStats()
    stats.observe(runner())
    stats.observe(runner("POST", 201, took=0.3))
    stats.observe(runner("BREW", 405))  # not a standard method: "other", the label set stays bounded
    stats.observe(runner(status=None, text="503 Service Unavailable"))  # head not framed
    stats.observe(runner(status=None, text=None))  # the client went before anything was sent
    # an exchange record (status an int, ended_at set) works the same
    now = time.monotonic()
    stats.observe(SimpleNamespace(method="GET", status=404, started_at=now - 70.0, ended_at=now))
    assert stats.requests == {("GET", 200): 1, ("POST", 201): 1, ("other", 405): 1, ("GET", 503): 1,
                              ("GET", 0): 1, ("GET", 404): 1}
    assert sum(stats.buckets) == 6
    assert stats.buckets[-1] == 1  # 70 s: past the last bound
    assert stats.buckets[BUCKETS.index(0.5)] == 1  # 0.3 s
    stats.rejected(400)
    stats.rejected(400)
    assert stats.rejections == {400: 2}


def test_pull_collector_output_parses() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from wsgiplus.shell.metrics import PullCollector

    stats = RequestStats()
    for _ in range(3):
        stats.observe(runner())
    stats.rejected(431)
    server = SimpleNamespace(active=2, suspensions=SimpleNamespace(count=1), connections={1, 2, 3},
                             pool=SimpleNamespace(size=8, busy=lambda: 1, queued=lambda: 0),
                             stopping=False, bytes_in=100, bytes_out=200)
    registry = CollectorRegistry()
    registry.register(PullCollector(server, stats))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in parser.text_string_to_metric_families(generate_latest(registry).decode())
               for s in f.samples}
    assert samples[("wsgiplus_requests_total", (("method", "GET"), ("status", "200")))] == 3
    assert samples[("wsgiplus_rejected_total", (("status", "431"),))] == 1
    assert samples[("wsgiplus_request_duration_seconds_count", ())] == 3
    assert samples[("wsgiplus_request_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("wsgiplus_requests_in_flight", ())] == 2
    assert samples[("wsgiplus_requests_suspended", ())] == 1
    assert samples[("wsgiplus_connections_open", ())] == 3
    assert samples[("wsgiplus_pool_threads_busy", ())] == 1
    assert samples[("wsgiplus_received_bytes_total", ())] == 100
    assert samples[("wsgiplus_sent_bytes_total", ())] == 200
    assert samples[("wsgiplus_ready", ())] == 1


def test_status_listener_routes() -> None:
    import socket

    sock = socket.socket()
    try:
        ready = [True]
        listener = StatusListener(sock, lambda: (b"m 1\n", "text/plain"), lambda: ready[0],
                                  lambda fd, kind, cb: None, lambda fd: None)
        assert listener.route(b"GET /metrics HTTP/1.1")[:2] == (200, "text/plain")
        assert listener.route(b"GET /metrics?x=1 HTTP/1.0")[2] == b"m 1\n"
        assert listener.route(b"GET /readyz HTTP/1.1")[0] == 200
        ready[0] = False
        assert listener.route(b"GET /readyz HTTP/1.1")[0] == 503
        assert listener.route(b"GET /healthz HTTP/1.1")[0] == 200
        assert listener.route(b"DELETE /metrics HTTP/1.1")[0] == 405
        assert listener.route(b"GET /x HTTP/1.1")[0] == 404
        assert listener.route(b"GET\xff / HTTP/1.1")[0] == 405  # odd bytes are a method like any other
        assert listener.route(b"nonsense")[0] == 400
    finally:
        sock.close()
