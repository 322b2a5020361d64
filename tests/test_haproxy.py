"""WSGI+ behind a real HAProxy: connection reuse to the backends, X-Forwarded-For, health checks
on ``/readyz`` (the metrics listener), and rolling restarts with nothing lost.

Skipped when haproxy is not installed (Debian: ``haproxy``).
"""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

import pytest
from loadbalancers import HAPROXY, LB_APP, Backend, free_port, rolling_restart, start_haproxy, until

pytestmark = [pytest.mark.haproxy, pytest.mark.skipif(HAPROXY is None, reason="needs haproxy")]
pytest.importorskip("prometheus_client")

ENV_APP = LB_APP + '''
import json

_plain = app


def app(environ, start_response):
    if environ["PATH_INFO"] != "/env":
        return _plain(environ, start_response)
    body = json.dumps({"name": NAME, "remote_addr": environ["REMOTE_ADDR"],
                       "scheme": environ["wsgi.url_scheme"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


def make_backends(tmp_path: Path, *extra: str) -> list[Backend]:
    (tmp_path / "lbapp.py").write_text(ENV_APP)
    backends = []
    for name in "ab":
        args = ["--workers", "2", "--threads", "4", "--no-access-log", "--log-level", "info",
                "--metrics-bind", f"127.0.0.1:{free_port()}", "--proxy-headers",
                "--forwarded-allow-ips", "127.0.0.1", *extra]
        backends.append(Backend(name, f"127.0.0.1:{free_port()}", tmp_path, args))
    return backends


def servers(backends: list[Backend]) -> list[tuple[str, str]]:
    return [(b.bind, b.args[b.args.index("--metrics-bind") + 1]) for b in backends]


def test_haproxy_reaches_both_and_forwards_the_client(tmp_path: Path) -> None:
    backends = make_backends(tmp_path)
    balancer = None
    try:
        for b in backends:
            b.start()
        for b in backends:
            b.wait_serving()
        balancer = start_haproxy(tmp_path / "haproxy", servers(backends))
        names, envs = [], []
        conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=10, source_address=("127.0.0.2", 0))
        try:
            for _ in range(10):
                conn.request("GET", "/env")
                envs.append(json.loads(conn.getresponse().read()))
        finally:
            conn.close()
        names = {e["name"] for e in envs}
        assert names == {"a", "b"}, envs
        assert all(e["remote_addr"] == "127.0.0.2" and e["scheme"] == "http" for e in envs)
        # a graceful stop turns /readyz to 503: HAProxy takes the server out at once
        backends[0].signal(signal.SIGTERM)
        # (the reason says it was /readyz's 503, not a refused connection after the exit)
        assert until(lambda: "is DOWN, reason: Layer7 wrong status, code: 503" in balancer.error_log(), 20), \
            balancer.error_log()
    finally:
        if balancer is not None:
            balancer.stop()
        for b in backends:
            b.kill()


@pytest.mark.rolling
@pytest.mark.timeout(240)
def test_rolling_restart_behind_haproxy_loses_nothing(tmp_path: Path) -> None:
    backends = make_backends(tmp_path)
    clients = rolling_restart(backends, lambda: start_haproxy(tmp_path / "haproxy", servers(backends)))
    print(f"\nrolling restart behind haproxy: {clients.summary()}")
