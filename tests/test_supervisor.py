"""The process model with real processes and real signals: ``python -m wsgiplus --workers N``.

Every wait is bounded; every server runs in its own session and its whole
process group is killed in teardown. Requests are held suspended by a *gate*:
a socket in the test that each request's future waits on, so the test knows
exactly how many requests are in flight before it signals anything.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import get_many

# The app the server processes import. "/" answers with the worker's pid and
# the app's VERSION; "/gate" suspends on a future that completes only when
# the test's gate says so (the wait runs on a helper thread, not a pool thread).
APP_SOURCE = '''
import os
import socket
import threading
from concurrent.futures import Future

VERSION = "v1"


def _gate_future():
    fut = Future()

    def wait():
        try:
            with socket.create_connection(("127.0.0.1", int(os.environ["GATE_PORT"])), timeout=60) as s:
                s.sendall(b"in")
                if s.recv(2) != b"go":
                    raise RuntimeError("gate closed")
            fut.set_result(os.getpid())
        except Exception as exc:
            fut.set_exception(exc)

    threading.Thread(target=wait, daemon=True).start()
    return fut


def app(environ, start_response):
    if environ["PATH_INFO"] == "/gate":
        fut = _gate_future()
        yield fut
        body = f"done {fut.result()}".encode()
    else:
        body = f"{VERSION} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    yield body
'''

LISTENING = re.compile(r"WSGI\+ listening on 127\.0\.0\.1:(\d+)")
READY = re.compile(r"worker pid (\d+) ready")


class Proc:
    """A server subprocess whose merged output is read by a thread, so every wait is bounded."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        full_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, pass_fds=pass_fds,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def matches(self, pattern: re.Pattern[str] | str, start: int = 0) -> list[re.Match[str]]:
        pattern = re.compile(pattern)
        with self._cond:
            return [m for line in self.lines[start:] if (m := pattern.search(line))]

    def wait_for(self, pattern: re.Pattern[str] | str, count: int = 1, timeout: float = 20.0,
                 start: int = 0) -> list[re.Match[str]]:
        """Wait until ``count`` output lines (from line ``start`` on) match ``pattern``."""
        pattern = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for line in self.lines[start:] if (m := pattern.search(line))]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "<EOF>"):
                    tail = "\n".join(self.lines[-40:])
                    raise AssertionError(f"no {count} x {pattern.pattern!r} in the output:\n{tail}")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def port(self, timeout: float = 20.0) -> int:
        return int(self.wait_for(LISTENING, timeout=timeout)[0].group(1))

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """Kill the whole process group (the supervisor and every worker it forked)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(5)


@pytest.fixture
def spawn() -> Iterator:
    procs: list[Proc] = []

    def start(args: list[str], cwd: Path, env: dict[str, str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> Proc:
        proc = Proc(args, cwd, env, pass_fds)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


class Gate:
    """Holds requests suspended: each one's future waits for a connection to this socket to say go."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []

    def wait_arrivals(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.conns) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {len(self.conns)} of {n} requests reached the gate")
            self.sock.settimeout(left)
            conn, _ = self.sock.accept()
            conn.settimeout(10)
            assert conn.recv(2) == b"in"
            self.conns.append(conn)

    def release(self) -> None:
        for conn in self.conns:
            conn.sendall(b"go")
            conn.close()
        self.conns = []

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "plusapp.py").write_text(APP_SOURCE)
    return tmp_path


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def serve_args(*extra: str) -> list[str]:
    return ["-m", "wsgiplus", "plusapp:app", "--bind", "127.0.0.1:0", "--threads", "2",
            "--log-level", "info", "--no-access-log", *extra]


@pytest.mark.parametrize("workers", [1, 2])
def test_graceful_sigterm_loses_none_of_100_suspended_requests(spawn, gate, app_dir, workers) -> None:
    proc = spawn(serve_args("--workers", str(workers), "--graceful-timeout", "60"), app_dir,
                 {"GATE_PORT": str(gate.port)})
    port = proc.port()
    if workers > 1:
        proc.wait_for(READY, count=workers)
    results: list[tuple[int, bytes]] = []
    clients = threading.Thread(target=lambda: results.extend(get_many(port, ["/gate"] * 100, 90)))
    clients.start()
    try:
        gate.wait_arrivals(100)  # all 100 accepted and suspended in the workers
        proc.send(signal.SIGTERM)
        stopping = proc.wait_for(r"worker \d+: stopping \((\d+) requests in flight", count=workers)
        assert sum(int(m.group(1)) for m in stopping) == 100
        gate.release()  # only now, with every worker already stopping, do the futures complete
    finally:
        clients.join(90)
    assert len(results) == 100
    assert all(status == 200 and body.startswith(b"done ") for status, body in results), results[:3]
    assert proc.wait(30) == 0, proc.output


def test_graceful_timeout_bounds_the_wait_for_requests_that_never_finish(spawn, gate, app_dir) -> None:
    proc = spawn(serve_args("--workers", "2", "--graceful-timeout", "1"), app_dir,
                 {"GATE_PORT": str(gate.port)})
    port = proc.port()
    proc.wait_for(READY, count=2)
    results: list[object] = []

    def client() -> None:
        try:
            results.append(get(port, "/gate", timeout=30))
        except OSError as exc:
            results.append(exc)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    gate.wait_arrivals(4)
    proc.send(signal.SIGTERM)  # the gate is never opened
    assert proc.wait(30) == 0
    for t in clients:
        t.join(30)
    assert len(results) == 4 and all(isinstance(r, OSError) for r in results)  # cut off, not answered
    assert proc.matches("graceful timeout")


def test_killed_worker_is_replaced_and_server_keeps_answering(spawn, app_dir) -> None:
    proc = spawn(serve_args("--workers", "2"), app_dir)
    port = proc.port()
    first = {int(m.group(1)) for m in proc.wait_for(READY, count=2)}
    for victim in sorted(first):
        mark = proc.mark()
        os.kill(victim, signal.SIGKILL)
        proc.wait_for(rf"worker pid {victim} died unexpectedly \(killed by signal 9\)", start=mark)
        proc.wait_for(READY, start=mark)
    replacements = {int(m.group(1)) for m in proc.matches(READY)} - first
    assert len(replacements) == 2
    answers = [get(port) for _ in range(20)]
    assert all(status == 200 for status, _ in answers)
    assert {int(body.split()[1]) for _, body in answers} <= replacements  # only the new workers answer
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_sighup_replaces_workers_with_the_new_code_and_drops_nothing(spawn, app_dir) -> None:
    proc = spawn(serve_args("--workers", "2"), app_dir)
    port = proc.port()
    old = {int(m.group(1)) for m in proc.wait_for(READY, count=2)}
    assert get(port)[1].startswith("v1 ")

    # a client keeps sending requests, one connection each, all through the reload
    failures: list[object] = []
    answers: list[str] = []
    done = threading.Event()

    def client() -> None:
        for _ in range(2000):
            if done.is_set():
                return
            try:
                status, body = get(port)
                answers.append(body)
                if status != 200:
                    failures.append(status)
            except OSError as exc:
                failures.append(exc)

    load = threading.Thread(target=client)
    load.start()
    try:
        source = (app_dir / "plusapp.py").read_text().replace('VERSION = "v1"', 'VERSION = "v2-new"')
        (app_dir / "plusapp.py").write_text(source)
        mark = proc.mark()
        proc.send(signal.SIGHUP)
        for pid in old:
            proc.wait_for(rf"worker pid {pid} exited \(exit status 0\)", start=mark)
    finally:
        done.set()
        load.join(30)
    assert not failures, failures[:5]
    assert answers and all(a.startswith(("v1 ", "v2-new ")) for a in answers)
    after = [get(port)[1] for _ in range(20)]
    assert all(body.startswith("v2-new ") for body in after), after
    assert not {int(body.split()[1]) for body in after} & old
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_sighup_with_broken_code_keeps_the_old_workers(spawn, app_dir) -> None:
    proc = spawn(serve_args("--workers", "2"), app_dir)
    port = proc.port()
    old = {int(m.group(1)) for m in proc.wait_for(READY, count=2)}
    (app_dir / "plusapp.py").write_text("def app(:\n")  # a syntax error
    mark = proc.mark()
    proc.send(signal.SIGHUP)
    proc.wait_for("the new worker failed to boot", count=2, start=mark)
    answers = [get(port) for _ in range(10)]
    assert all(status == 200 and body.startswith("v1 ") for status, body in answers)
    assert {int(body.split()[1]) for _, body in answers} <= old
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_max_requests_recycles_the_worker_without_dropping_requests(spawn, app_dir) -> None:
    proc = spawn(serve_args("--workers", "1", "--max-requests", "5", "--max-requests-jitter", "2"), app_dir)
    port = proc.port()
    proc.wait_for(READY)
    answers: list[tuple[int, str]] = []
    pids: set[int] = set()
    deadline = time.monotonic() + 60  # bounded in count and time; a loaded machine boots slowly
    while len(pids) < 3 and len(answers) < 5000 and time.monotonic() < deadline:
        # the worker serves on until its replacement listens
        answers.append(get(port))
        pids.add(int(answers[-1][1].split()[1]))
    assert len(pids) == 3, proc.output
    assert all(status == 200 for status, _ in answers)
    # the second worker's line can still be on its way through the pipe: wait for it (bounded)
    asked = proc.wait_for(r"worker \d+: served (\d+) requests \(max_requests\)", count=2)
    assert len(asked) >= 2 and all(5 <= int(m.group(1)) <= 7 for m in asked)
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_ttin_adds_and_ttou_removes_a_worker(spawn, app_dir) -> None:
    proc = spawn(serve_args("--workers", "2"), app_dir)
    proc.port()
    first = [int(m.group(1)) for m in proc.wait_for(READY, count=2)]
    proc.send(signal.SIGTTIN)
    proc.wait_for(READY, count=3)
    mark = proc.mark()
    proc.send(signal.SIGTTOU)
    proc.wait_for(rf"stopping worker pid ({first[0]}|{first[1]}) \(2 workers wanted\)", start=mark)
    proc.wait_for(r"worker pid \d+ exited \(exit status 0\)", start=mark)
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_app_that_does_not_import_stops_the_supervisor(spawn, tmp_path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no config for you')\n")
    proc = spawn(["-m", "wsgiplus", "broken:app", "--bind", "127.0.0.1:0", "--workers", "2"], tmp_path)
    assert proc.wait(30) == 3
    assert "no config for you" in proc.output
    assert "worker failed to boot" in proc.output
