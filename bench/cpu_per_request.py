"""Server CPU per request over real sockets, for before/after figures on a loaded machine.

Starts ``python -m wsgiplus bench.apps:APP`` (from the tree on PYTHONPATH, or each ``--tree``
given), drives it with ``wrk`` for a few seconds and reads the server's CPU time from
``/proc/PID/stat``: µs of CPU per request, which moves much less than req/s when other work
shares the cores. Trees and flag sets alternate, and the medians are printed::

    git archive main src | tar -x -C /tmp/main
    python -m bench.cpu_per_request --tree /tmp/main/src --tree src \\
        --flags "--no-access-log" --flags "--access-logfile /tmp/a.log" --rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from bench.profile import _free_port, _ticks, _wait_port

ROOT = Path(__file__).resolve().parent.parent


def measure(server: subprocess.Popen, port: int, seconds: float, conns: int, path: str = "/",
            pin: list[str] | None = None) -> tuple[float, float]:
    """(req/s, µs CPU per request) of ``server`` under wrk (``pin``: e.g. ``["taskset", "-c", "1"]``),
    after a 1 s warm-up; the server is stopped at the end."""
    wrk = [*(pin or []), "wrk", "-t1"]
    try:
        _wait_port(port)
        subprocess.run([*wrk, "-c10", "-d1s", f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=60)
        c0 = _ticks(server.pid)
        out = subprocess.run([*wrk, f"-c{conns}", f"-d{seconds:.0f}s", f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, timeout=seconds + 30).stdout
        cpu_s = (_ticks(server.pid) - c0) / os.sysconf("SC_CLK_TCK")
        total = re.search(r"(\d+) requests in", out)
        n = int(total.group(1)) if total else 0
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        rps = float(rate.group(1)) if n and rate else 0.0
        return rps, cpu_s / max(n, 1) * 1e6
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def once(tree: str, flags: str, app: str, seconds: float, conns: int, path: str = "/") -> tuple[float, float]:
    """(req/s, µs CPU per request) of one server run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(Path(tree).resolve()), str(ROOT))))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "wsgiplus", f"bench.apps:{app}", "--bind",
                               f"127.0.0.1:{port}", "--log-level", "warning", *shlex.split(flags)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return measure(server, port, seconds, conns, path)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_per_request")
    p.add_argument("--tree", action="append", help="a src/ directory to import wsgiplus from (repeat)")
    p.add_argument("--flags", action="append", help="server flags, one set per --flags (repeat)")
    p.add_argument("--app", default="hello")
    p.add_argument("--path", default="/")
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    trees = args.tree or [str(ROOT / "src")]
    flag_sets = args.flags or ["--no-access-log"]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for flags in flag_sets:
            for tree in trees:
                results.setdefault((tree, flags), []).append(
                    once(tree, flags, args.app, args.seconds, args.conns, args.path))
    print(f"uptime: {open('/proc/loadavg').read().split()[:3]}  ({args.rounds} rounds, medians)")
    for (tree, flags), runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        us = statistics.median(u for _, u in runs)
        spread = f"{min(u for _, u in runs):.1f}-{max(u for _, u in runs):.1f}"
        print(f"{tree:28s} {flags:38s} {rps:9,.0f} req/s  {us:6.1f} us CPU/req (range {spread})")


if __name__ == "__main__":
    main()
