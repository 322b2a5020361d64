"""What the loop -> pool -> loop hand-off costs per request, measured by taking it away.

    python -m bench.handoff [--rounds 5] [--seconds 4] [--conns 50]

Serves the hello app twice, alternating, pinned to core 0 under ``wrk`` on core 1 (as
bench/run.py does), and reads the server's CPU from /proc:

* ``pool``: WSGI+ as it ships (``--threads 8``): each step is submitted to a pool thread,
  which posts its outcome back to the loop (``call_soon_threadsafe``);
* ``inline``: the same server with its pool replaced by one that runs each step at once, on
  the loop thread (the outcome is still posted with ``call_soon_threadsafe``, so only the
  thread crossing and its wake-ups are gone).

The difference is the hand-off: the futex wake of a pool thread, the GIL's trips between
the two threads and the context switches (one core). ``inline`` is a measurement, not a
mode: an app that blocks would block every connection. Pure-Python build only (the
compiled build constructs its pool directly, so it cannot be replaced from here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cpu_per_request import measure
from bench.profile import _free_port

ROOT = Path(__file__).resolve().parent.parent


class InlinePool:
    """A ``ThreadPool`` stand-in that runs every job at once, on the caller's thread."""

    affinity = False
    size = 1

    def __init__(self, threads: int, name: str = "", affinity: bool = False) -> None:
        pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    def submit_to(self, index: int | None, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    @staticmethod
    def current_index() -> int | None:
        return 0

    def busy(self) -> int:
        return 0

    def queued(self) -> int:
        return 0

    def long_running(self, threshold: float) -> list[Any]:
        return []

    def shutdown(self, timeout: float | None = None) -> None:
        pass


def serve(argv: list[str]) -> None:
    """``python -m bench.handoff serve --inline ARGS...``: the CLI, with the pool replaced."""
    if argv and argv[0] == "--inline":
        argv = argv[1:]
        from wsgiplus._compiled import compiled
        from wsgiplus.server import core

        if compiled():
            sys.exit("bench.handoff: the inline pool needs the pure-Python build")
        core.ThreadPool = InlinePool  # type: ignore[misc, assignment]
    from wsgiplus.shell.cli import main

    main(argv)


def once(mode: str, seconds: float, conns: int) -> tuple[float, float]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))))
    argv = ["bench.apps:hello", "--bind", f"127.0.0.1:{port}", "--threads", "8", "--no-access-log",
            "--log-level", "warning"]
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "bench.handoff", "serve",
                               *(["--inline"] if mode == "inline" else []), *argv],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return measure(server, port, seconds, conns, pin=["taskset", "-c", "1"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:])
        return
    p = argparse.ArgumentParser(prog="python -m bench.handoff")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--conns", type=int, default=50)
    args = p.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"pool": [], "inline": []}
    for _ in range(args.rounds):
        for mode in results:
            results[mode].append(once(mode, args.seconds, args.conns))
    print(f"load average {open('/proc/loadavg').read().split()[:3]}; {args.rounds} rounds, medians")
    med = {}
    for mode, runs in results.items():
        med[mode] = statistics.median(u for _, u in runs)
        print(f"  {mode:7s} {statistics.median(r for r, _ in runs):9,.0f} req/s  {med[mode]:6.1f} us CPU/request "
              f"(range {min(u for _, u in runs):.1f}-{max(u for _, u in runs):.1f})")
    print(f"  the hand-off: {med['pool'] - med['inline']:.1f} us CPU/request "
          f"({(med['pool'] - med['inline']) / med['pool'] * 100:.0f} % of the request)")


if __name__ == "__main__":
    main()
