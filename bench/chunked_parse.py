"""Parser CPU for a chunked upload (µs per MB) and for small requests, this tree against another.

Both RequestParser classes run in the same process, interleaved, best of the rounds, timed in
this thread's CPU time, so the comparison holds on a shared, noisy machine::

    python bench/chunked_parse.py            # this tree against main's protocol.py (git show)
    python bench/chunked_parse.py REV        # against another revision's
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import wsgiplus.protocols.http11 as current


def load_protocol(rev: str) -> Any:
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:src/wsgiplus/protocol.py"], cwd=root, check=True,
                            capture_output=True).stdout
    module = types.ModuleType("wsgiplus._protocol_" + rev.replace("/", "_"))
    module.__package__ = "wsgiplus"
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:protocol.py", "exec"), module.__dict__)
    return module


HEAD = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


def upload(total: int, chunk: int, ext: bytes = b"") -> bytes:
    piece = b"x" * chunk
    return b"".join(b"%x%b\r\n%b\r\n" % (chunk, ext, piece) for _ in range(total // chunk)) + b"0\r\n\r\n"


def time_upload(module: Any, stream: bytes, read: int) -> float:
    """Seconds to parse ``stream`` arriving in ``read``-byte reads (as the loop's data_received)."""
    reads = [stream[i : i + read] for i in range(0, len(stream), read)]
    parser = module.RequestParser(module.Limits(max_body_size=1 << 40))
    start = time.thread_time()
    parser.feed(HEAD)
    got = 0
    for data in reads:
        for event in parser.feed(data):
            if type(event) is module.Data:
                got += len(event.data)
    elapsed = time.thread_time() - start
    assert parser.idle
    return elapsed


def time_gets(module: Any, n: int) -> float:
    req = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    parser = module.RequestParser()
    start = time.thread_time()
    for _ in range(n):
        parser.feed(req)
    return time.thread_time() - start


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "main"
    before = load_protocol(rev)
    mb = 16
    cases = [("1 MiB chunks", upload(mb << 20, 1 << 20)), ("64 KiB chunks", upload(mb << 20, 65536)),
             ("16 KiB chunks", upload(mb << 20, 16384)), ("1 KiB chunks", upload(mb << 20, 1024)),
             ("16 KiB chunks + ext", upload(mb << 20, 16384, b";name=value"))]
    print(f"chunked upload of {mb} MiB in 64 KiB reads, µs per MiB (best of 7), {rev} -> this tree")
    for name, stream in cases:
        best = {before: float("inf"), current: float("inf")}
        for _ in range(7):
            for module in (before, current):
                best[module] = min(best[module], time_upload(module, stream, 65536))
        a, b = (best[m] / mb * 1e6 for m in (before, current))
        print(f"  {name:22s} {a:9.1f} -> {b:9.1f}  ({b - a:+.1f})")
    n = 20000
    best = {before: float("inf"), current: float("inf")}
    for _ in range(7):
        for module in (before, current):
            best[module] = min(best[module], time_gets(module, n))
    a, b = (best[m] / n * 1e6 for m in (before, current))
    print(f"small GET, one per feed, µs per request: {a:.2f} -> {b:.2f}  ({b - a:+.2f})")


if __name__ == "__main__":
    main()
