"""Metrics and health with real processes: Prometheus scrapes parsed by prometheus_client's own
parser, ``--workers 2`` aggregated, statsd datagrams caught by a UDP socket, readiness at SIGTERM.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import raw_exchange, wait_for
from loadbalancers import free_port
from test_supervisor import APP_SOURCE, READY, get, serve_args, spawn  # noqa: F401 (spawn is a fixture)
from test_supervisor import gate as gate  # noqa: F401 (a fixture)

parser = pytest.importorskip("prometheus_client.parser")

METRICS_AT = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
WORKER_DIR = re.compile(r"workers write to (\S+)")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "plusapp.py").write_text(APP_SOURCE)
    return tmp_path


def fetch(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by prometheus_client: {(sample name, sorted labels): value}."""
    status, text = fetch(port, "/metrics")
    assert status == 200, text
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def start(spawn: Any, app_dir: Path, gate: Any, *extra: str) -> tuple[Any, int, int]:  # noqa: F811
    proc = spawn(serve_args("--metrics-bind", "127.0.0.1:0", *extra), app_dir, {"GATE_PORT": str(gate.port)})
    port = proc.port()
    metrics_port = int(proc.wait_for(METRICS_AT)[0].group(1))
    return proc, port, metrics_port


def test_one_process_metrics_scraped_and_parsed(spawn, gate, app_dir) -> None:  # noqa: F811
    proc, port, mport = start(spawn, app_dir, gate)
    for _ in range(3):
        assert get(port)[0] == 200
    assert post(port, b"x" * 1000) == 200
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    held: list[Any] = []
    client = threading.Thread(target=lambda: held.append(get(port, "/gate", timeout=30)))
    client.start()
    try:
        gate.wait_arrivals(1)  # the app has reached the gate and is about to yield its future
        # the loop counts the suspension a moment later: scrape until it has (bounded)
        deadline = time.monotonic() + 10
        while True:
            s = scrape(mport)
            if value(s, "wsgiplus_requests_suspended") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert value(s, "wsgiplus_requests_total", method="GET", status="200") == 3
        assert value(s, "wsgiplus_requests_total", method="POST", status="200") == 1
        assert value(s, "wsgiplus_rejected_total", status="400") == 1  # never reached the app
        assert value(s, "wsgiplus_request_duration_seconds_count") == 4
        assert value(s, "wsgiplus_request_duration_seconds_bucket", le="+Inf") == 4
        assert value(s, "wsgiplus_requests_in_flight") == 1
        assert value(s, "wsgiplus_requests_suspended") == 1
        assert value(s, "wsgiplus_pool_threads") == 2
        assert value(s, "wsgiplus_pool_threads_busy") == 0
        assert value(s, "wsgiplus_pool_queue_depth") == 0
        assert value(s, "wsgiplus_connections_open") == 1
        assert value(s, "wsgiplus_received_bytes_total") > 1000
        assert value(s, "wsgiplus_sent_bytes_total") > 0
        assert value(s, "wsgiplus_ready") == 1
        assert any(name == "python_info" for name, _ in s)  # prometheus_client's default registry too
    finally:
        gate.release()
        client.join(30)
    assert held and held[0][0] == 200
    s = scrape(mport)
    assert value(s, "wsgiplus_requests_total", method="GET", status="200") == 4
    assert value(s, "wsgiplus_requests_suspended") == 0
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_two_workers_aggregated_restarts_counted_dead_workers_dropped(spawn, gate, app_dir) -> None:  # noqa: F811
    proc, port, mport = start(spawn, app_dir, gate, "--workers", "2")
    first = {int(m.group(1)) for m in proc.wait_for(READY, count=2)}
    directory = Path(proc.wait_for(WORKER_DIR)[0].group(1))
    assert directory.is_dir()
    pids, sent = set(), 0
    while len(pids) < 2 and sent < 500:  # until both workers have answered some
        status, body = get(port)
        assert status == 200
        pids.add(int(body.split()[1]))
        sent += 1
    assert pids == first
    assert raw_exchange(port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")  # no Host
    # workers copy their counters once a second: poll, bounded
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_requests_total", method="GET", status="200") == sent,
                    timeout=15), scrape(mport)
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_rejected_total", status="400") == 1, timeout=15)
    s = scrape(mport)
    assert value(s, "wsgiplus_request_duration_seconds_count") == sent
    assert value(s, "wsgiplus_workers") == 2
    assert value(s, "wsgiplus_pool_threads") == 4  # 2 threads x 2 live workers
    assert value(s, "wsgiplus_ready") == 1
    # a worker killed: replaced, counted, its gauges dropped, its counts kept
    victim = sorted(first)[0]
    mark = proc.mark()
    os.kill(victim, signal.SIGKILL)
    proc.wait_for(READY, start=mark)
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_worker_restarts_total", reason="died") == 1, 15)
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_pool_threads") == 4, 15), scrape(mport)
    # SIGHUP: two fresh workers; the instance stays ready throughout
    polled: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() and len(polled) < 10000:
            polled.append(fetch(mport, "/readyz")[0])

    poller = threading.Thread(target=poll)
    mark = proc.mark()
    poller.start()
    try:
        proc.send(signal.SIGHUP)
        proc.wait_for(READY, count=2, start=mark)
        proc.wait_for(r"worker pid \d+ exited", count=2, start=mark)
    finally:
        done.set()
        poller.join(30)
    assert polled and set(polled) == {200}, polled
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_worker_restarts_total", reason="replaced") == 2, 15)
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_pool_threads") == 4, 30), scrape(mport)
    s = scrape(mport)
    # a killed worker may not have copied its last second of counts: at most that is missing
    assert 0 < value(s, "wsgiplus_requests_total", method="GET", status="200") <= sent
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not directory.exists()  # the supervisor's temporary directory is removed


@pytest.mark.parametrize("workers", ["1", "2"])
def test_readiness_turns_503_at_sigterm_while_requests_drain(spawn, gate, app_dir, workers) -> None:  # noqa: F811
    proc, port, mport = start(spawn, app_dir, gate, "--workers", workers, "--graceful-timeout", "60")
    if workers == "2":
        proc.wait_for(READY, count=2)
    assert fetch(mport, "/readyz") == (200, "ready\n")
    assert fetch(mport, "/healthz") == (200, "ok\n")
    held: list[Any] = []
    client = threading.Thread(target=lambda: held.append(get(port, "/gate", timeout=60)))
    client.start()
    try:
        gate.wait_arrivals(1)
        proc.send(signal.SIGTERM)
        # not ready from the moment the stop begins, while the request is still held
        assert wait_for(lambda: fetch(mport, "/readyz")[0] == 503, timeout=15)
        assert fetch(mport, "/readyz") == (503, "stopping\n")
        assert fetch(mport, "/healthz")[0] == 200  # alive: not a reason to kill it
        assert value(scrape(mport), "wsgiplus_ready") == 0
        assert not held
    finally:
        gate.release()
        client.join(30)
    assert held and held[0][0] == 200  # the request in flight was answered
    assert proc.wait(30) == 0


def test_statsd_gets_gunicorns_metric_names(spawn, gate, app_dir) -> None:  # noqa: F811
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    try:
        proc = spawn(serve_args("--workers", "2", "--statsd-host", f"127.0.0.1:{udp.getsockname()[1]}",
                                "--statsd-prefix", "myapp"), app_dir, {"GATE_PORT": str(gate.port)})
        port = proc.port()
        proc.wait_for(READY, count=2)
        for _ in range(2):
            assert get(port)[0] == 200
        assert get(port, "/missing")[0] == 200  # the app answers 200 to any path
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines += udp.recv(65536).decode().splitlines()
            if (sum(1 for x in lines if x == "myapp.gunicorn.requests:1|c|@1.0") >= 3
                    and any(x.startswith("myapp.gunicorn.workers:") for x in lines)):
                break
        assert sum(1 for x in lines if x == "myapp.gunicorn.requests:1|c|@1.0") == 3, lines
        assert sum(1 for x in lines if x == "myapp.gunicorn.request.status.200:1|c|@1.0") == 3, lines
        durations = [x for x in lines if x.startswith("myapp.gunicorn.request.duration:")]
        assert len(durations) == 3 and all(re.fullmatch(r"[^:]+:\d+\.\d+\|ms", x) for x in durations)
        assert "myapp.gunicorn.workers:2|g" in lines
        proc.send(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        udp.close()


def test_metrics_listener_refuses_what_it_does_not_serve(spawn, gate, app_dir) -> None:  # noqa: F811
    proc, port, mport = start(spawn, app_dir, gate)
    assert raw_exchange(mport, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_exchange(mport, b"GET /nothing HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    head = raw_exchange(mport, b"HEAD /readyz HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")  # no body
    assert raw_exchange(mport, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(mport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000).startswith(b"HTTP/1.1 431 ")
    # more idle connections than the listener's budget (32): the extra are closed, it keeps serving
    idle = [socket.create_connection(("127.0.0.1", mport), timeout=10) for _ in range(40)]
    try:
        assert wait_for(lambda: sum(1 for s in idle if _closed(s)) >= 8, timeout=10)
    finally:
        for s in idle:
            s.close()
    assert fetch(mport, "/healthz")[0] == 200
    assert get(port)[0] == 200  # the app's listener is untouched
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_gunicorn_workers_serve_the_same_metrics_aggregated(spawn, gate, app_dir, tmp_path) -> None:  # noqa: F811
    from test_gunicorn_worker import GUNICORN_LISTENING, NO_CONTROL

    mport = free_port()
    settings = tmp_path / "wsgiplus.toml"
    settings.write_text(f'metrics-bind = "127.0.0.1:{mport}"\n')
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    proc = spawn(["-m", "gunicorn", "-k", "wsgiplus.gunicorn.Worker", "-b", "127.0.0.1:0", "--threads", "2",
                  "--workers", "2", "--log-level", "info", *NO_CONTROL, "plusapp:app"], app_dir,
                 {"WSGIPLUS_CONFIG": str(settings), "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
                  "GATE_PORT": str(gate.port)})
    port = int(proc.wait_for(GUNICORN_LISTENING)[0].group(1))
    proc.wait_for(r"metrics on http://127\.0\.0\.1:\d+/metrics", count=2)  # each worker listens
    pids, sent = set(), 0
    while len(pids) < 2 and sent < 500:
        status, body = get(port)
        assert status == 200
        pids.add(int(body.split()[1]))
        sent += 1
    assert len(pids) == 2
    # whichever worker answers the scrape reports both
    assert wait_for(lambda: value(scrape(mport), "wsgiplus_requests_total", method="GET", status="200") == sent,
                    timeout=15), scrape(mport)
    assert value(scrape(mport), "wsgiplus_pool_threads") == 4
    assert fetch(mport, "/readyz")[0] == 200
    held: list[Any] = []
    client = threading.Thread(target=lambda: held.append(get(port, "/gate", timeout=60)))
    client.start()
    try:
        gate.wait_arrivals(1)
        proc.send(signal.SIGTERM)

        def not_ready() -> bool:
            try:
                return fetch(mport, "/readyz")[0] == 503
            except OSError:  # every worker has stopped listening: refused
                return True

        assert wait_for(not_ready, timeout=15)
    finally:
        gate.release()
        client.join(30)
    assert held and held[0][0] == 200
    assert proc.wait(30) == 0
