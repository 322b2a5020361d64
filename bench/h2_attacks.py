"""Figures for the HTTP/2 attacks: server CPU, RSS and app calls per attack.

``python bench/h2_attacks.py [--json FILE]``: for every attack in
tests/h2attacks.py, a fresh ``python -m wsgiplus`` (4 threads) is started,
attacked over one connection, then asked (over HTTP/1.1) how many times the
app ran. CPU is the server process's utime+stime during the attack; RSS is
VmRSS before and after, and the peak (VmHWM). The server must still answer
afterwards. Bounded: each attack stops at its frame budget or at the GOAWAY.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

_calls = 0
_lock = threading.Lock()


def app(environ: dict[str, Any], start_response: Any) -> Any:
    """Counts its calls; /count says how many; /big streams 64 MB unless stopped."""
    global _calls
    if environ["PATH_INFO"] == "/count":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(_calls).encode()]
    if environ["PATH_INFO"] == "/ready":
        start_response("200 OK", [])
        return [b"ok"]
    with _lock:
        _calls += 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/big":
        return (b"z" * 65536 for _ in range(1000))
    return [b"ok"]


def _stat(pid: int) -> tuple[float, int, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(name: str, attack: Any) -> dict[str, Any]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "wsgiplus", "bench.h2_attacks:app", "--bind", f"127.0.0.1:{port}",
                             "--threads", "4", "--no-access-log", "--log-level", "warning",
                             "--h2-window-timeout", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _get(port, "/ready")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        cpu0, rss0, _ = _stat(proc.pid)
        result = attack(port)
        time.sleep(0.5)  # let closes and resets settle
        cpu1, rss1, hwm = _stat(proc.pid)
        status, count = _get(port, "/count")
        result.update(
            attack=name,
            server_cpu_s=round(cpu1 - cpu0, 3),
            rss_before_mb=round(rss0 / 1024, 1),
            rss_after_mb=round(rss1 / 1024, 1),
            rss_peak_mb=round(hwm / 1024, 1),
            app_calls=int(count),
            still_serving=status == 200,
        )
        return result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    from h2attacks import ATTACKS, attack_zero_window

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    attacks = dict(ATTACKS, zero_window=attack_zero_window)
    results = [run_one(name, fn) for name, fn in attacks.items()]
    print("| attack | frames sent | answer | client s | server CPU s | RSS before → after (peak) MB | app calls | serving after |")
    print("|---|---:|---|---:|---:|---|---:|---|")
    for r in results:
        answer = f"GOAWAY {r['goaway']}" if "goaway" in r else f"RST_STREAM {r.get('reset')}"
        print(f"| {r['attack']} | {r.get('frames_sent', 1)} | {answer} | {r['seconds']} | {r['server_cpu_s']} | "
              f"{r['rss_before_mb']} → {r['rss_after_mb']} ({r['rss_peak_mb']}) | {r['app_calls']} | "
              f"{'yes' if r['still_serving'] else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
