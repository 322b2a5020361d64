"""Backpressure: a fast app and a slow reader keep memory flat and hold no thread while paused."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from conftest import wait_for

CHUNK = b"x" * 65536
TOTAL = 200 * 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_200mb_to_a_slow_reader_keeps_rss_bounded_and_frees_the_thread(serve: Any) -> None:
    produced = [0]

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(TOTAL))])
        for _ in range(TOTAL // len(CHUNK)):
            produced[0] += len(CHUNK)
            yield CHUNK

    server = serve(app, threads=2)
    baseline = rss_bytes()
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        # Not reading: the server must stop pulling from the app and give the thread back.
        # An idle pool alone is not a stall: between two steps the kernel's socket buffers may
        # still be taking bytes (then the write buffer drains and the app is asked for more;
        # seen on a loaded machine: 2.8 MiB, then 4 MiB). Stalled = no thread and no progress
        # across two looks; what must hold after that is the bound, whatever the kernel took.
        def stalled() -> bool:
            before = produced[0]
            if before == 0 or server.server.pool.busy():
                return False
            time.sleep(0.05)
            return produced[0] == before and server.server.pool.busy() == 0

        assert wait_for(stalled, timeout=20)
        time.sleep(0.3)
        assert produced[0] < 16 * 1024 * 1024, "the app kept producing for a client that reads nothing"
        assert server.server.pool.busy() == 0  # paused on the write buffer, no thread held
        received = 0
        deadline = time.monotonic() + 60
        while received < TOTAL + 100 and time.monotonic() < deadline:
            data = sock.recv(262144)  # a slow reader: small reads, a pause now and then
            if not data:
                break
            received += len(data)
            if received % (8 * 1024 * 1024) < 262144:
                time.sleep(0.01)
    finally:
        sock.close()
        stop.set()
        sampler.join(5)
    assert produced[0] == TOTAL
    assert received > TOTAL  # the whole body (and the head) arrived
    growth = peak[0] - baseline
    assert growth < 48 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB for a 200 MiB response"
    print(f"\n200 MiB to a slow reader: peak RSS growth {growth / 2**20:.1f} MiB")
