"""Stopping from a terminal: Ctrl-C is graceful, a second Ctrl-C (or SIGQUIT) stops now.

A terminal sends SIGINT to the whole foreground process group, so the tests do
too (``killpg``): the supervisor and its workers all get it.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from test_supervisor import READY, get, serve_args, spawn  # noqa: F401 (spawn is a fixture)
from test_supervisor import app_dir as app_dir  # noqa: F401 (a fixture)
from test_supervisor import gate as gate  # noqa: F401 (a fixture)


@pytest.mark.parametrize("second", ["ctrl-c", "sigquit"])
@pytest.mark.parametrize("workers", [1, 2])
def test_second_signal_during_a_graceful_stop_stops_now(spawn, gate, app_dir, workers, second) -> None:  # noqa: F811
    # a graceful timeout far beyond every wait below: only "stop now" can end the process in time
    proc = spawn(serve_args("--workers", str(workers), "--graceful-timeout", "3600"), app_dir,
                 {"GATE_PORT": str(gate.port)})
    port = proc.port()
    if workers > 1:
        proc.wait_for(READY, count=workers)
    results: list[object] = []

    def client() -> None:
        try:
            results.append(get(port, "/gate", timeout=60))
        except OSError as exc:
            results.append(exc)

    clients = [threading.Thread(target=client) for _ in range(3)]
    for t in clients:
        t.start()
    gate.wait_arrivals(3)  # three requests suspended, never released
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    proc.wait_for("press Ctrl-C again to stop now")
    stopping = proc.wait_for(r"worker \d+: stopping \((\d+) requests in flight", count=workers)
    assert sum(int(m.group(1)) for m in stopping) == 3
    if workers == 1:
        proc.wait_for(r"waiting for 3 request\(s\) to finish; press Ctrl-C again to stop now")
    if second == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send(signal.SIGQUIT)
    assert proc.wait(60) == 0, proc.output
    for t in clients:
        t.join(30)
    assert len(results) == 3 and all(isinstance(r, OSError) for r in results), results  # cut off
    assert "stopping now" in proc.output
    assert "killing it" not in proc.output  # no SIGKILL from the supervisor: the workers stopped
    assert "Traceback" not in proc.output


def test_repeated_sigterm_to_a_worker_group_stays_graceful(spawn, gate, app_dir) -> None:  # noqa: F811
    """systemd's KillMode=control-group sends SIGTERM to every process: that is not 'twice'."""
    proc = spawn(serve_args("--workers", "2", "--graceful-timeout", "3600"), app_dir,
                 {"GATE_PORT": str(gate.port)})
    port = proc.port()
    proc.wait_for(READY, count=2)
    results: list[object] = []
    client = threading.Thread(target=lambda: results.append(get(port, "/gate", timeout=60)))
    client.start()
    gate.wait_arrivals(1)
    os.killpg(proc.pid, signal.SIGTERM)  # each worker gets it directly and from the supervisor
    proc.wait_for(r"worker \d+: stopping \(1 requests in flight")
    gate.release()
    client.join(60)
    assert results and results[0][0] == 200 and results[0][1].startswith("done ")
    assert proc.wait(60) == 0
    assert "stopping now" not in proc.output


SERVER_SCRIPT = '''
import sys
sys.path.insert(0, ".")
from plusapp import app
from wsgiplus import Config, Server
from wsgiplus.shell.logconfig import setup_logging

config = Config(bind=["127.0.0.1:0"], threads=2, graceful_timeout=3600.0, access_log=False)
setup_logging(config)
Server(app, config).run()
'''


def test_server_run_api_second_sigint_stops_now(spawn, gate, app_dir) -> None:  # noqa: F811
    (app_dir / "serve.py").write_text(SERVER_SCRIPT)
    proc = spawn(["serve.py"], app_dir, {"GATE_PORT": str(gate.port)})
    port = proc.port()
    results: list[object] = []

    def client() -> None:
        try:
            results.append(get(port, "/gate", timeout=60))
        except OSError as exc:
            results.append(exc)

    t = threading.Thread(target=client)
    t.start()
    gate.wait_arrivals(1)
    proc.send(signal.SIGINT)
    proc.wait_for("shutting down")
    proc.send(signal.SIGINT)
    assert proc.wait(60) == 0, proc.output
    t.join(30)
    assert len(results) == 1 and isinstance(results[0], OSError)
