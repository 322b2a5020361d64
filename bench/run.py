"""Runs the benchmark scenarios against WSGI+ and its peers in one run; writes tables and plots.

``bash bench/run.sh [--quick] [--scenarios hello,upstream,...]`` (run.sh sets up the
virtualenv and the Debian tools, then calls this with the venv's python).

Every server runs on core 0 and every load generator (wrk, the asyncio clients,
the upstream, this script) on core 1, so a server cannot steal its load's CPU.
Each measured run starts a fresh server, and runs go round-robin over the
servers (run 1 of every server, then run 2...), so a burst of noise from the
shared machine lands on every server rather than on one. Only ratios between
servers of the same run mean anything.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PY = sys.executable
SERVER_CPU = "0"
LOAD_CPU = "1"
HZ = os.sysconf("SC_CLK_TCK")
ALL_SCENARIOS = ["hello", "upstream", "idle", "stream", "sse", "slow", "h2", "files"]


# -- servers ---------------------------------------------------------------------


@dataclass
class ServerKind:
    """One server configuration: how to start it with a given app on a given port."""

    name: str
    label: str
    command: Callable[[str, int], list[str]]
    plus: bool = False  # runs the WSGI+ (future-yielding) variants of the apps


def _wsgiplus(app: str, port: int) -> list[str]:
    return [PY, "-m", "wsgiplus", f"bench.apps:{app}", "--bind", f"127.0.0.1:{port}",
            "--threads", "8", "--no-access-log", "--log-level", "warning"]


def _gunicorn(*extra: str) -> Callable[[str, int], list[str]]:
    def cmd(app: str, port: int) -> list[str]:
        return [str(BIN / "gunicorn"), "-w", "1", *extra, "-b", f"127.0.0.1:{port}",
                "--log-level", "warning", "--timeout", "120", f"bench.apps:{app}"]
    return cmd


def _waitress(app: str, port: int) -> list[str]:
    # connection limit and poll() raised so waitress is not capped at 100/1024 sockets
    return [str(BIN / "waitress-serve"), "--threads=8", f"--listen=127.0.0.1:{port}",
            "--connection-limit=20000", "--asyncore-use-poll", "--backlog=2048", f"bench.apps:{app}"]


def _uvicorn(app: str, port: int) -> list[str]:
    return [str(BIN / "uvicorn"), f"bench.asgi_apps:{app}", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--log-level", "warning", "--no-access-log", "--loop", "uvloop",
            "--http", "httptools", "--backlog", "2048"]


def _granian(*extra: str) -> Callable[[str, int], list[str]]:
    def cmd(app: str, port: int) -> list[str]:
        return [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--log-level", "warning", "--no-ws", *extra, f"bench.apps:{app}"]
    return cmd


COMPILED = "wsgiplus-compiled"  # the optional mypyc build of the same tree (setup.py)

SERVERS = [
    ServerKind("wsgiplus", "WSGI+ (8 threads)", _wsgiplus, plus=True),
    ServerKind(COMPILED, "WSGI+ compiled (8 threads)", _wsgiplus, plus=True),
    ServerKind("gunicorn-sync", "gunicorn sync", _gunicorn("-k", "sync")),
    ServerKind("gunicorn-gthread", "gunicorn gthread 8", _gunicorn("-k", "gthread", "--threads", "8")),
    ServerKind("gunicorn-gevent", "gunicorn gevent", _gunicorn("-k", "gevent", "--worker-connections", "20000")),
    ServerKind("waitress", "waitress 8 threads", _waitress),
    ServerKind("uvicorn-a2wsgi", "uvicorn + a2wsgi", _uvicorn),
    ServerKind("granian", "granian wsgi (default)", _granian()),
    ServerKind("granian-8", "granian wsgi 8 blocking threads", _granian("--blocking-threads", "8")),
]
BASELINE = "wsgiplus"


def _wsgiplus_with(*extra: str) -> Callable[[str, int], list[str]]:
    def cmd(app: str, port: int) -> list[str]:
        return _wsgiplus(app, port) + list(extra)
    return cmd


# the files scenario: each server with and without sendfile
FILE_SERVERS = [
    ServerKind("wsgiplus", "WSGI+ (8 threads)", _wsgiplus, plus=True),
    ServerKind("wsgiplus-nosendfile", "WSGI+ --no-sendfile", _wsgiplus_with("--no-sendfile"), plus=True),
    ServerKind("gunicorn-gthread", "gunicorn gthread 8", _gunicorn("-k", "gthread", "--threads", "8")),
    ServerKind("gunicorn-gthread-nosendfile", "gunicorn gthread 8 --no-sendfile",
               _gunicorn("-k", "gthread", "--threads", "8", "--no-sendfile")),
]


def _hypercorn(app: str, port: int) -> list[str]:
    # hypercorn serves a WSGI callable directly (threads from its executor), h2c by prior knowledge
    return [str(BIN / "hypercorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning",
            "--backlog", "2048", f"bench.apps:{app}"]


# the HTTP/2 scenario's servers: the WSGI servers that speak h2c by prior knowledge
H2_SERVERS = [
    ServerKind("wsgiplus", "WSGI+ (8 threads)", _wsgiplus, plus=True),
    ServerKind(COMPILED, "WSGI+ compiled (8 threads)", _wsgiplus, plus=True),
    ServerKind("hypercorn", "hypercorn (WSGI)", _hypercorn),
    ServerKind("granian", "granian wsgi (default)", _granian()),
    ServerKind("granian-8", "granian wsgi 8 blocking threads", _granian("--blocking-threads", "8")),
]


# -- /proc: CPU and memory of a server's process tree --------------------------------


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the whole tree, plus what reaped children used (cutime+cstime)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if p == pid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / HZ


def memory_kb(pid: int, key: str = "VmHWM") -> int:
    """Sum of ``key`` (VmHWM: peak RSS; VmRSS: now) over every process of the server."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


# -- running things ----------------------------------------------------------------------


class Running:
    """A server process (group) started on the server core."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.logf = open(log, "ab")
        self.logf.write(("\n$ " + " ".join(argv) + "\n").encode())
        self.logf.flush()
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], cwd=ROOT, env=env,
                                     stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # workers left in the group after the parent went
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.logf.close()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30.0, path: str = "/ready") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run_load(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run a load generator (on the load core, inherited) and parse its BENCHJSON line."""
    try:
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout).stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON ") :])
    return {"error": "no result", "output": out[-500:]}


def settle_upstream(port: int, wait: float = 8.0) -> None:
    """Wait (up to ``wait`` s) until the warm-up's queued upstream requests have drained."""
    deadline, zeros = time.monotonic() + wait, 0
    while time.monotonic() < deadline and zeros < 3:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/stats")
            zeros = zeros + 1 if conn.getresponse().read() == b"0" else 0
            conn.close()
        except OSError:
            zeros = 0
        time.sleep(0.2)


_port = 21000


def next_port() -> int:
    """A fresh loopback port below the ephemeral range for every server start."""
    global _port
    for _ in range(1000):
        _port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", _port))
                return _port
            except OSError:
                continue
    raise RuntimeError("no free port")


@dataclass
class Bench:
    quick: bool
    out: Path
    servers: list[ServerKind]
    logdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    nginx: str | None = None
    src: Path | None = None  # a snapshot's src/ to serve WSGI+ from, instead of the work tree
    h2_servers: list[ServerKind] = field(default_factory=lambda: list(H2_SERVERS))
    compiled: Path | None = None  # a src/ holding the compiled build, for the wsgiplus-compiled server

    @property
    def reps(self) -> int:
        return 1 if self.quick else 3

    @property
    def duration(self) -> int:
        return 3 if self.quick else 5

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(ROOT)] + ([str(self.src)] if self.src else [])
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
        env.update(extra)
        return env

    def start(self, kind: ServerKind, app: str, env: dict[str, str]) -> tuple[Running, int] | None:
        if kind.name == COMPILED:
            if self.compiled is None:
                return None
            env = dict(env, PYTHONPATH=os.pathsep.join((str(self.compiled), env.get("PYTHONPATH", ""))))
        port = next_port()
        name = app.replace("_block", "_plus") if kind.plus else app
        srv = Running(kind.command(name, port), env, self.logdir / f"{kind.name}.log")
        if not wait_ready(port, srv.proc):
            print(f"  {kind.name}: did not start (see {self.logdir / (kind.name + '.log')})", flush=True)
            srv.stop()
            return None
        return srv, port

    def wrk(self, port: int, connections: int, duration: float, timeout: str = "5s") -> dict[str, Any]:
        res = run_load(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}",
                        "-s", str(ROOT / "bench" / "report.lua"), f"http://127.0.0.1:{port}/"],
                       timeout=duration + 30)
        if "requests" in res:
            secs = res["duration_us"] / 1e6
            res["rps"] = res["requests"] / secs
            res["errors"] = res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"]
        return res

    # -- wrk scenarios: hello, upstream, slow clients ---------------------------------

    def wrk_scenario(self, scenario: str, app: str, connections: int, env: dict[str, str],
                     warmup: float, extra_load: Callable[[int], subprocess.Popen] | None = None,
                     settle: Callable[[], None] | None = None) -> None:
        runs: dict[str, list[dict[str, Any]]] = {k.name: [] for k in self.servers}
        for rep in range(self.reps):
            for kind in self.servers:
                started = self.start(kind, app, env)
                if started is None:
                    runs[kind.name].append({"error": "did not start"})
                    continue
                srv, port = started
                try:
                    if warmup:
                        self.wrk(port, connections, warmup)
                    if settle:
                        settle()
                    side = extra_load(port) if extra_load else None
                    if side is not None:
                        time.sleep(1.5)  # let the slow clients connect and start dribbling
                    cpu0 = cpu_seconds(srv.pid)
                    t0 = time.monotonic()
                    res = self.wrk(port, connections, self.duration)
                    res["cpu_s"] = cpu_seconds(srv.pid) - cpu0
                    res["wall_s"] = time.monotonic() - t0
                    res["rss_kb"] = memory_kb(srv.pid)
                    if side is not None:
                        side_out, _ = side.communicate(timeout=60)
                        for line in side_out.splitlines():
                            if line.startswith("BENCHJSON "):
                                res.update(json.loads(line[10:]))
                finally:
                    srv.stop()
                if "rps" in res:
                    res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / max(1, res["requests"])
                    print(f"  [{scenario} {rep + 1}/{self.reps}] {kind.name:18s} {res['rps']:9.0f} req/s "
                          f"p99 {res['p99_us'] / 1000:7.1f} ms err {res['errors']:5d} "
                          f"cpu {res['cpu_us_per_req']:6.0f} us/req rss {res['rss_kb'] / 1024:6.1f} MB", flush=True)
                else:
                    print(f"  [{scenario}] {kind.name}: {res}", flush=True)
                runs[kind.name].append(res)
        self.results[scenario] = runs

    def hello(self) -> None:
        self.wrk_scenario("hello", "hello", 50, self.env(), warmup=1)
        if self.nginx:
            self.results["hello"]["nginx"] = self.nginx_runs(
                lambda port: self.wrk_path(port, "/hello", 50, self.duration))

    def start_upstream(self) -> tuple[subprocess.Popen, int]:
        """The loopback upstream (100 ms per answer) of the fan-in scenarios."""
        port = next_port()
        up = subprocess.Popen([PY, "-m", "bench.upstream", str(port), "0.1"], cwd=ROOT, env=self.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        return up, port

    def upstream(self) -> None:
        up, port = self.start_upstream()
        try:
            env = self.env(BENCH_UPSTREAM=f"127.0.0.1:{port}")

            def settle() -> None:
                settle_upstream(port)

            # a warm-up lets servers that start threads and upstream connections on
            # demand (granian: up to 512) reach their steady state
            self.wrk_scenario("upstream", "upstream_block", 500, env, warmup=3, settle=settle)
        finally:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()

    # -- HTTP/2: h2load, h2c by prior knowledge --------------------------------------------

    def h2load(self, port: int, connections: int, streams: int, duration: float) -> dict[str, Any]:
        argv = ["h2load", "-c", str(connections), "-m", str(streams), "-t", "1", "-D", str(duration),
                f"http://127.0.0.1:{port}/"]
        try:
            out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=duration + 60).stdout
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return parse_h2load(out)

    def h2_runs(self, app: str, env: dict[str, str], connections: int, streams: int,
                settle: Callable[[], None] | None = None) -> dict[str, list[dict[str, Any]]]:
        servers = self.h2_servers
        runs: dict[str, list[dict[str, Any]]] = {k.name: [] for k in servers}
        for rep in range(self.reps):
            for kind in servers:
                started = self.start(kind, app, env)
                if started is None:
                    runs[kind.name].append({"error": "did not start"})
                    continue
                srv, port = started
                try:
                    self.h2load(port, connections, streams, 1)  # warm-up
                    if settle:
                        settle()
                    cpu0 = cpu_seconds(srv.pid)
                    res = self.h2load(port, connections, streams, self.duration)
                    res["cpu_s"] = cpu_seconds(srv.pid) - cpu0
                    res["rss_kb"] = memory_kb(srv.pid)
                finally:
                    srv.stop()
                if "rps" in res:
                    if res["requests"]:  # none done in time: no per-request figure
                        res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / res["requests"]
                    print(f"  [h2 {app} {rep + 1}/{self.reps}] {kind.name:18s} {res['rps']:9.0f} req/s "
                          f"mean {res.get('mean_ms', 0):7.1f} ms err {res['errors']:5d} "
                          f"cpu {res.get('cpu_us_per_req', 0):6.0f} us/req rss {res['rss_kb'] / 1024:6.1f} MB",
                          flush=True)
                else:
                    print(f"  [h2 {app}] {kind.name}: {res}", flush=True)
                runs[kind.name].append(res)
        return runs

    def h2(self) -> None:
        """HTTP/2: 10 connections x 100 concurrent streams (h2load), hello and the upstream fan-in."""
        if shutil.which("h2load") is None:
            print("  h2load not installed (Debian nghttp2-client): skipped", flush=True)
            self.results["h2"] = {"skipped": "h2load not installed"}
            return
        out = {"hello": self.h2_runs("hello", self.env(), 10, 100)}
        up, port = self.start_upstream()
        try:
            out["upstream"] = self.h2_runs("upstream_block", self.env(BENCH_UPSTREAM=f"127.0.0.1:{port}"), 10, 100,
                                           settle=lambda: settle_upstream(port, 20))
        finally:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        self.results["h2"] = out

    def slow(self) -> None:
        dur = self.duration

        def slow_clients(port: int) -> subprocess.Popen:
            return subprocess.Popen([PY, "-m", "bench.clients", "slow", str(port), "200", str(dur + 2)],
                                    cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, text=True)

        self.wrk_scenario("slow", "hello", 50, self.env(), warmup=0, extra_load=slow_clients)

    # -- idle capacity -------------------------------------------------------------------

    def idle(self) -> None:
        wait = 8.0 if self.quick else 15.0
        sizes = [5000, 10000]
        runs: dict[str, dict[str, Any]] = {}
        for n in sizes:
            for kind in self.servers:
                gauge = Path(tempfile.mkdtemp(prefix="bench-gauge-")) / "g"
                started = self.start(kind, "idle_block", self.env(BENCH_WAIT=str(wait), BENCH_GAUGE=str(gauge)))
                if started is None:
                    runs.setdefault(kind.name, {})[str(n)] = {"error": "did not start"}
                    continue
                srv, port = started
                try:
                    time.sleep(0.5)
                    base = memory_kb(srv.pid, "VmRSS")
                    client = subprocess.Popen([PY, "-m", "bench.clients", "idle", str(port), str(n), str(wait)],
                                              cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, text=True)
                    peak_rss = base
                    cpu0 = cpu_seconds(srv.pid)
                    while client.poll() is None:
                        peak_rss = max(peak_rss, memory_kb(srv.pid, "VmRSS"))
                        time.sleep(0.25)
                    out, _ = client.communicate()
                    res: dict[str, Any] = {}
                    for line in out.splitlines():
                        if line.startswith("BENCHJSON "):
                            res = json.loads(line[10:])
                    peak = 0
                    for f in gauge.parent.glob("g.*"):
                        if f.suffix != ".tmp":
                            try:
                                peak += int(f.read_text().split()[1])
                            except (OSError, ValueError, IndexError):
                                pass
                    res.update(admitted=peak, base_rss_kb=base, peak_rss_kb=peak_rss,
                               hwm_kb=memory_kb(srv.pid), cpu_s=cpu_seconds(srv.pid) - cpu0)
                    res["kb_per_admitted"] = (peak_rss - base) / peak if peak else None
                finally:
                    srv.stop()
                    shutil.rmtree(gauge.parent, ignore_errors=True)
                kb = res["kb_per_admitted"]
                print(f"  [idle {n}] {kind.name:18s} admitted {peak:6d} connected {res.get('connected')} "
                      f"rss +{(peak_rss - base) / 1024:6.1f} MB "
                      f"{'-' if kb is None else f'{kb:.1f}'} KB/req", flush=True)
                runs.setdefault(kind.name, {})[str(n)] = res
        self.results["idle"] = {"wait_s": wait, "sizes": sizes, "runs": runs}

    # -- streaming -----------------------------------------------------------------------------

    def stream(self) -> None:
        size = (256 << 20) if self.quick else (1 << 30)
        env = self.env(BENCH_STREAM_BYTES=str(size))
        runs: dict[str, list[dict[str, Any]]] = {k.name: [] for k in self.servers}
        for rep in range(self.reps):
            for kind in self.servers:
                started = self.start(kind, "stream", env)
                if started is None:
                    runs[kind.name].append({"error": "did not start"})
                    continue
                srv, port = started
                try:
                    cpu0 = cpu_seconds(srv.pid)
                    res = run_load([PY, "-m", "bench.clients", "stream", str(port), "--timeout", "60"], 90)
                    res["cpu_s"] = cpu_seconds(srv.pid) - cpu0
                    res["rss_kb"] = memory_kb(srv.pid)
                finally:
                    srv.stop()
                print(f"  [stream {rep + 1}/{self.reps}] {kind.name:18s} {res.get('mb_s', 0):8.1f} MB/s "
                      f"complete {res.get('complete')} cpu {res['cpu_s']:.2f}s rss {res['rss_kb'] / 1024:.1f} MB",
                      flush=True)
                runs[kind.name].append(res)
        slow = self.slow_reader(env)
        if self.nginx:
            runs["nginx"] = self.nginx_runs(lambda port: run_load(
                [PY, "-m", "bench.clients", "stream", str(port), "--path", "/big", "--timeout", "60"], 90),
                size=size)
        self.results["stream"] = {"bytes": size, "runs": runs, "slow_reader": slow}

    def slow_reader(self, env: dict[str, str]) -> dict[str, dict[str, Any]]:
        """One client reading the big response at 2 MB/s: server RSS must stay flat."""
        out: dict[str, dict[str, Any]] = {}
        duration = 3.0 if self.quick else 5.0
        for kind in self.servers:
            started = self.start(kind, "stream", env)
            if started is None:
                out[kind.name] = {"error": "did not start"}
                continue
            srv, port = started
            try:
                client = subprocess.Popen([PY, "-m", "bench.clients", "slow-reader", str(port), "--duration",
                                           str(duration)], cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, text=True)
                time.sleep(1.0)
                at_1s = memory_kb(srv.pid, "VmRSS")
                peak = at_1s
                while client.poll() is None:
                    peak = max(peak, memory_kb(srv.pid, "VmRSS"))
                    time.sleep(0.2)
                res: dict[str, Any] = {}
                for line in client.communicate()[0].splitlines():
                    if line.startswith("BENCHJSON "):
                        res = json.loads(line[10:])
                res.update(rss_1s_kb=at_1s, rss_peak_kb=peak, growth_kb=peak - at_1s)
            finally:
                srv.stop()
            print(f"  [slow reader] {kind.name:18s} RSS at 1 s {at_1s / 1024:.1f} MB, peak {peak / 1024:.1f} MB "
                  f"(+{(peak - at_1s) / 1024:.1f} MB), read {res.get('slow_bytes', 0) / 1e6:.1f} MB", flush=True)
            out[kind.name] = res
        return out

    def sse(self) -> None:
        events = 30 if self.quick else 50
        env = self.env(BENCH_SSE_EVENTS=str(events))
        duration = events * 0.1 + 0.5
        runs: dict[str, list[dict[str, Any]]] = {k.name: [] for k in self.servers}
        for rep in range(self.reps):
            for kind in self.servers:
                started = self.start(kind, "sse_block", env)
                if started is None:
                    runs[kind.name].append({"error": "did not start"})
                    continue
                srv, port = started
                try:
                    cpu0 = cpu_seconds(srv.pid)
                    res = run_load([PY, "-m", "bench.clients", "sse", str(port), "100", str(duration)],
                                   duration + 30)
                    res["cpu_s"] = cpu_seconds(srv.pid) - cpu0
                    res["rss_kb"] = memory_kb(srv.pid)
                    res["ideal_events"] = 100 * events
                finally:
                    srv.stop()
                print(f"  [sse {rep + 1}/{self.reps}] {kind.name:18s} events {res.get('events')}/{100 * events} "
                      f"clients {res.get('clients_served')} cpu {res['cpu_s']:.2f}s "
                      f"rss {res['rss_kb'] / 1024:.1f} MB", flush=True)
                runs[kind.name].append(res)
        self.results["sse"] = {"events_per_client": events, "runs": runs}

    # -- nginx (reference) -------------------------------------------------------------------------

    def nginx_runs(self, measure: Callable[[int], dict[str, Any]], size: int = 0) -> list[dict[str, Any]]:
        """Runs ``measure`` against a fresh single-process nginx on 127.0.0.1, ``reps`` times."""
        out = []
        tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        try:
            if size:
                with open(tmp / "big", "wb") as f:
                    chunk = b"x" * (1 << 20)
                    for _ in range(size >> 20):
                        f.write(chunk)
            for _ in range(self.reps):
                port = next_port()
                conf = tmp / "nginx.conf"
                conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /hello {{ default_type text/plain; return 200 "Hello, world!"; }}
    location = /big {{ alias {tmp}/big; default_type application/octet-stream; }}
  }}
}}
""")
                srv = Running([self.nginx, "-c", str(conf), "-p", str(tmp)], self.env(), self.logdir / "nginx.log")
                try:
                    if not wait_ready(port, srv.proc, path="/hello"):
                        out.append({"error": "nginx did not start"})
                        continue
                    cpu0 = cpu_seconds(srv.pid)
                    res = measure(port)
                    res["cpu_s"] = cpu_seconds(srv.pid) - cpu0
                    res["rss_kb"] = memory_kb(srv.pid)
                    if "rps" in res:
                        res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / max(1, res["requests"])
                finally:
                    srv.stop()
                print(f"  [nginx] {json.dumps({k: v for k, v in res.items() if k in ('rps', 'mb_s', 'cpu_s')})}",
                      flush=True)
                out.append(res)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    def files(self) -> None:
        """A 20 MB file as Flask's send_file serves it (wsgi.file_wrapper), 4 connections downloading it
        over and over with wrk: MB/s and server CPU per GB, with and without sendfile."""
        size = 20 << 20
        tmp = Path(tempfile.mkdtemp(prefix="wsgiplus-bench-file-"))
        path = tmp / "download.bin"
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(block)
        env = self.env(BENCH_FILE=str(path))
        wanted = {k.name for k in self.servers}
        kinds = [k for k in FILE_SERVERS if k.name in wanted or k.name.replace("-nosendfile", "") in wanted]
        runs: dict[str, list[dict[str, Any]]] = {k.name: [] for k in kinds}
        try:
            for rep in range(self.reps):
                for kind in kinds:
                    started = self.start(kind, "download", env)
                    if started is None:
                        runs[kind.name].append({"error": "did not start"})
                        continue
                    srv, port = started
                    try:
                        self.wrk_path(port, "/", 4, 1)
                        cpu0 = cpu_seconds(srv.pid)
                        res = self.wrk_path(port, "/", 4, self.duration)
                        res["cpu_s"] = cpu_seconds(srv.pid) - cpu0
                        res["rss_kb"] = memory_kb(srv.pid)
                    finally:
                        srv.stop()
                    if "rps" in res:
                        res["mb_s"] = res["rps"] * size / 1e6
                        gb = res["requests"] * size / (1 << 30)
                        res["cpu_s_per_gb"] = res["cpu_s"] / max(gb, 1e-9)
                        print(f"  [files {rep + 1}/{self.reps}] {kind.name:28s} {res['mb_s']:8.0f} MB/s "
                              f"err {res['errors']} cpu {res['cpu_s_per_gb']:.2f} s/GB "
                              f"rss {res['rss_kb'] / 1024:.1f} MB", flush=True)
                    else:
                        print(f"  [files] {kind.name}: {res}", flush=True)
                    runs[kind.name].append(res)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.results["files"] = {"bytes": size, "runs": runs}

    def wrk_path(self, port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
        res = run_load(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s",
                        str(ROOT / "bench" / "report.lua"), f"http://127.0.0.1:{port}{path}"], duration + 30)
        if "requests" in res:
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
            res["errors"] = res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"]
        return res


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_h2load(out: str) -> dict[str, Any]:
    """h2load's summary: req/s, requests, errors (failed, errored, timed out, non-2xx), latencies."""
    done = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    reqs = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    times = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if not (done and reqs and codes):
        return {"error": "no result", "output": out[-500:]}
    res: dict[str, Any] = {"rps": float(done.group(2)), "seconds": float(done.group(1)),
                           "requests": int(reqs.group(3))}
    res["errors"] = int(reqs.group(5)) + int(reqs.group(6)) + int(reqs.group(7)) + \
        int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4))
    if times and res["requests"]:
        res["min_ms"] = _ms(times.group(1), times.group(2))
        res["max_ms"] = _ms(times.group(3), times.group(4))
        res["mean_ms"] = _ms(times.group(5), times.group(6))
    return res


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024 // 1024
    except OSError:
        pass
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} x {model}, {mem} GB RAM, "
            f"Python {platform.python_version()}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("wsgiplus", "gunicorn", "gevent", "waitress", "uvicorn", "a2wsgi", "granian", "hypercorn", "h2",
                "uvloop", "httptools"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        out["wrk"] = re.sub(r"\s+\[.*", "", wrk).replace("wrk ", "")
    except OSError:
        pass
    try:
        h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        out["h2load"] = h2load.replace("h2load ", "")
    except OSError:
        pass
    return out


def git_revision(ref: str) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def compile_tree(src: Path, where: Path) -> Path | None:
    """The compiled build (setup.py's modules, through mypyc) of the tree at ``src``, under
    ``where``; None (and the wsgiplus-compiled server is left out) when it cannot be built."""
    dest = where / "compiled"
    shutil.copytree(src, dest / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    print("bench: compiling the request path with mypyc (about a minute)", flush=True)
    res = subprocess.run([PY, "setup.py", "build_ext", "--inplace"], cwd=dest, capture_output=True, text=True,
                         env=dict(os.environ, WSGIPLUS_COMPILE="1"), timeout=900)
    if res.returncode != 0:
        (where / "compile.log").write_text(res.stdout + res.stderr)
        print(f"bench: the compiled build failed (see {where / 'compile.log'}): leaving {COMPILED} out", flush=True)
        return None
    return dest / "src"


def snapshot(ref: str, where: Path) -> Path:
    """``src/`` as committed at ``ref``, exported (read-only for the repo) under ``where``."""
    dest = where / "snapshot"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 run each, short durations, 256 MB stream")
    p.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                   help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}")
    p.add_argument("--servers", default="", help="comma-separated subset of server names (default: all)")
    p.add_argument("--out", default="", help="output folder (default docs/benchmarks, or "
                   "/tmp/wsgiplus-bench-quick with --quick)")
    p.add_argument("--ref", default="", help="benchmark WSGI+ as committed at this git ref "
                   "(e.g. HEAD) rather than the working tree, which others may be editing")
    args = p.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = set(scenarios) - set(ALL_SCENARIOS)
    if bad:
        p.error(f"unknown scenarios: {', '.join(sorted(bad))}")
    servers = list(SERVERS)
    if args.servers:
        wanted = set(args.servers.split(","))
        servers = [s for s in SERVERS if s.name in wanted]
    out = Path(args.out or ("/tmp/wsgiplus-bench-quick" if args.quick else ROOT / "docs" / "benchmarks"))
    out.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="wsgiplus-bench-logs-"))
    try:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # this script and every load generator it starts
    except OSError:
        pass
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    bench = Bench(quick=args.quick, out=out, servers=servers, logdir=logdir, nginx=nginx)
    if args.servers:
        bench.h2_servers = [s for s in H2_SERVERS if s.name in set(args.servers.split(","))]
    revision = git_revision(args.ref or "HEAD") + ("" if args.ref else "+work tree")
    if args.ref:
        bench.src = snapshot(args.ref, logdir)
    if any(s.name == COMPILED for s in servers + bench.h2_servers):
        bench.compiled = compile_tree(bench.src or ROOT / "src", logdir)
    if bench.compiled is None:  # not asked for, or it could not be built
        bench.servers = [s for s in servers if s.name != COMPILED]
        bench.h2_servers = [s for s in bench.h2_servers if s.name != COMPILED]
    raw_path = out / "results.json"
    # merge into an earlier run's results so one scenario can be re-run on its own
    previous = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"bench: {', '.join(scenarios)} against {', '.join(s.name for s in bench.servers)}; logs in {logdir}", flush=True)
    for scenario in scenarios:
        t0 = time.monotonic()
        print(f"== {scenario}", flush=True)
        getattr(bench, scenario)()
        print(f"== {scenario} done in {time.monotonic() - t0:.0f}s", flush=True)
        meta = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
                "command": "bash bench/run.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
                "seconds": round(time.monotonic() - t0)}
        previous.setdefault("scenarios", {})[scenario] = {"meta": meta, "data": bench.results[scenario]}
        meta["wsgiplus_revision"] = revision
        previous["machine"] = machine()
        previous["versions"] = versions()
        previous["labels"] = ({s.name: s.label for s in SERVERS + H2_SERVERS + FILE_SERVERS}
                              | {"nginx": "nginx (reference)"})
        raw_path.write_text(json.dumps(previous, indent=1))
    from bench import report

    report.write(previous, out)
    print(f"bench: wrote {out / 'results.md'} and plots in {out}", flush=True)


if __name__ == "__main__":
    main()
