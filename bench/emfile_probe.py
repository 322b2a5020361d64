"""At the fd limit: the server's CPU and log volume, and whether it serves again afterwards.

    python -m bench.emfile_probe --loop asyncio [--seconds 5] [--nofile 64] [--clients 120]

Starts ``python -m wsgiplus`` under ``ulimit -n NOFILE`` (a subprocess), opens
CLIENTS idle connections (more than the server has fds for), then measures for
SECONDS the server's CPU time (utime+stime from /proc) and the bytes it wrote to
its error log. Then closes the clients and checks that a new request is served.
Bounded in time and count; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(port: int, timeout: float = 5.0) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return sock.recv(100)
    except OSError as exc:
        return repr(exc).encode()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--nofile", type=int, default=64)
    p.add_argument("--clients", type=int, default=120)
    args = p.parse_args()
    log = tempfile.NamedTemporaryFile(prefix="emfile-", suffix=".log", delete=False)
    cmd = (f"ulimit -n {args.nofile}; exec {sys.executable} -m wsgiplus wsgiplus.demo:app "
           f"--loop {args.loop} --bind 127.0.0.1:0 --threads 2 --no-access-log --header-timeout 120")
    proc = subprocess.Popen(["bash", "-c", cmd], stderr=log, start_new_session=True)
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            time.sleep(0.1)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(log.name).read())
            port = int(m.group(1)) if m else None
        assert port, open(log.name).read()
        before = get(port)[:15]
        clients = []
        for _ in range(args.clients):
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(1.0)  # let the server reach the limit
        size0, cpu0, t0 = os.path.getsize(log.name), cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        size1, cpu1, t1 = os.path.getsize(log.name), cpu_seconds(proc.pid), time.monotonic()
        at_limit = get(port, timeout=2)[:15]
        for c in clients:
            c.close()
        time.sleep(2.5)  # longer than any accept back-off
        after = get(port)[:15]
        lines = [line for line in open(log.name, errors="replace") if "EMFILE" in line
                 or "Too many open files" in line or "file descriptor" in line]
        print(json.dumps({
            "loop": args.loop, "nofile": args.nofile, "clients": len(clients),
            "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "log_bytes_per_s": round((size1 - size0) / (t1 - t0)),
            "log_lines_naming_the_limit": len(lines),
            "first_such_line": lines[0].strip()[:200] if lines else None,
            "served_before": before.decode("latin-1"), "at_limit": at_limit.decode("latin-1"),
            "served_after": after.decode("latin-1"),
        }))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)
        os.unlink(log.name)


if __name__ == "__main__":
    main()
