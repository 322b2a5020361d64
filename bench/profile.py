"""Where WSGI+ spends its time and memory, for the figures in docs/benchmarks.md.

``python -m bench.profile cpu [--app hello|upstream] [--seconds 8]``
    WSGI+ on core 0 under wrk on core 1; py-spy samples only the thread that
    holds the GIL (``--gil``), so the table is Python time per function, the
    time that limits a one-process server. Prints req/s, CPU us per request
    and the top functions (self and inclusive). For the compiled build, put its
    src/ first on PYTHONPATH and add ``--native`` (its functions have no Python frames).

``python -m bench.profile memory [--n 2000]``
    N requests suspended on a timer future in an in-process WSGI+ server;
    tracemalloc compares the heap before and while they wait, and prints the
    bytes per suspended request by allocation site.

Run with the bench virtualenv's python (``.bench-venv/bin/python -m bench.profile ...``).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _env() -> dict[str, str]:
    """This checkout's bench/ importable; a PYTHONPATH given by the caller (a snapshot's src) kept first."""
    extra = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra, str(ROOT)) if p))


def cpu(app: str, seconds: float, threads: int, rate: int, top: int, native: bool = False) -> None:
    env = _env()
    procs: list[subprocess.Popen] = []
    connections, path = 50, "/"
    try:
        if app == "upstream":
            up = _free_port()
            procs.append(subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "bench.upstream", str(up)],
                                          cwd=ROOT, env=env))
            _wait_port(up)
            env["BENCH_UPSTREAM"] = f"127.0.0.1:{up}"
            connections = 500
        port = _free_port()
        server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "wsgiplus",
                                   f"bench.apps:{'upstream_plus' if app == 'upstream' else 'hello'}",
                                   "--bind", f"127.0.0.1:{port}", "--threads", str(threads),
                                   "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=env)
        procs.append(server)
        _wait_port(port)
        wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds + 3:.0f}s",
                                f"http://127.0.0.1:{port}{path}"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        folded = Path(tempfile.mkstemp(suffix=".folded")[1])
        t0, c0 = time.monotonic(), _ticks(server.pid)
        subprocess.run([str(BIN / "py-spy"), "record", "-p", str(server.pid), "-d", str(int(seconds)), "-r", str(rate),
                        "--gil", *(["--native"] if native else []), "-f", "raw", "-o", str(folded)],
                       capture_output=True, timeout=seconds + 30)
        cpu_s = (_ticks(server.pid) - c0) / os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - t0
        out, _ = wrk.communicate(timeout=seconds + 30)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        rps = float(m.group(1)) if m else 0.0
        print(f"{app}: {rps:,.0f} req/s (wrk), server CPU {cpu_s / wall * 100:.0f}% of a core, "
              f"{cpu_s / wall / max(rps, 1) * 1e6:.0f} us CPU per request")
        _print_folded(folded, top)
        folded.unlink()
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _print_folded(path: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            incl[f] += int(n)
    print(f"{total} samples with the GIL held")
    for title, counter in (("self", own), ("inclusive", incl)):
        print(f"--- {title}")
        for f, n in counter.most_common(top):
            print(f"{100 * n / max(total, 1):5.1f}%  {f}")


def memory(n: int, top: int) -> None:
    import gc
    import tracemalloc

    from bench import aio
    from wsgiplus.testing import ServerThread

    aio.sleep(0).result(5)  # the bridge's loop thread exists before the baseline
    entered = [0]

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        entered[0] += 1
        yield aio.sleep(30)
        start_response("200 OK", [("Content-Length", "2")])
        yield b"ok"

    with ServerThread(app, threads=8) as srv:
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        client = subprocess.Popen([sys.executable, "-m", "bench.clients", "idle", str(srv.port), str(n), "25"],
                                  cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while entered[0] < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        after = tracemalloc.take_snapshot()
        count = entered[0]
        client.kill()
        client.wait()
        stats = after.compare_to(before, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"{count} suspended requests: Python heap +{total / 1024:.0f} KB = {total / max(count, 1):.0f} B each")
        for s in stats[:top]:
            frame = s.traceback[0]
            name = frame.filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
            print(f"{s.size_diff / max(count, 1):8.0f} B/req  {s.count_diff / max(count, 1):5.2f} blocks/req  "
                  f"{name}:{frame.lineno}")
        tracemalloc.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("--app", choices=["hello", "upstream"], default="hello")
    c.add_argument("--seconds", type=float, default=8)
    c.add_argument("--threads", type=int, default=8)
    c.add_argument("--rate", type=int, default=200)
    c.add_argument("--top", type=int, default=25)
    c.add_argument("--native", action="store_true",
                   help="C frames too (py-spy --native): the compiled build's functions are C functions")
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, default=2000)
    m.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    if args.cmd == "cpu":
        cpu(args.app, args.seconds, args.threads, args.rate, args.top, args.native)
    else:
        memory(args.n, args.top)


if __name__ == "__main__":
    main()
