"""Every example, started with its one documented command, against real loopback upstreams.

The headline: the proxy on ``--threads 4`` serves 500 concurrent clients of
an upstream that answers 200 ms after 400 requests are in flight at once - a
count, not a stopwatch: with a thread held per request, at most 4 could be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_server, wait_for

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def example(spec: str, threads: int, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> Iterator[int]:
    """``wsgiplus <spec> --threads N`` on an ephemeral loopback port; yields the port."""
    with cli_server([spec, "--threads", str(threads), "--no-access-log"], cwd,
                    env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))) as server:
        yield server.port


class Upstream:
    """An asyncio HTTP server on its own thread that counts requests in flight.

    Each request is held until ``gate`` requests are in flight together (or
    ``gate_timeout`` passes, so a failure cannot hang), then ``delay`` more.
    """

    def __init__(self, name: str, delay: float = 0.0, gate: int = 0, gate_timeout: float = 30.0,
                 shared: Upstream | None = None) -> None:
        self.name, self.delay, self.gate, self.gate_timeout = name, delay, gate, gate_timeout
        self.counter = shared.counter if shared else {"inflight": 0, "max": 0, "total": 0, "aborted": 0}
        self.loop = shared.loop if shared else asyncio.new_event_loop()
        self.opened = shared.opened if shared else None
        self._own = shared is None
        self.port = 0

    def start(self) -> Upstream:
        ready = threading.Event()

        async def setup() -> None:
            if self.opened is None:
                self.opened = asyncio.Event()
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
            self.port = server.sockets[0].getsockname()[1]
            self._server = server
            ready.set()

        if self._own:
            threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(setup(), self.loop).result(10)
        ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.counter
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                c["inflight"] += 1
                c["total"] += 1
                c["max"] = max(c["max"], c["inflight"])
                try:
                    if self.gate:
                        if c["inflight"] >= self.gate:
                            self.opened.set()  # type: ignore[union-attr]
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self.opened.wait(), self.gate_timeout)  # type: ignore[union-attr]
                    await asyncio.sleep(self.delay)
                finally:
                    c["inflight"] -= 1
                if target.startswith("/big/"):  # /big/N: N bytes of a known pattern
                    body = pattern(int(target[5:]))
                else:
                    body = json.dumps({"name": self.name, "target": target}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                try:
                    await writer.drain()
                except ConnectionError:
                    c["aborted"] += 1  # the peer closed before taking the whole answer
                    raise
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        if self._own:
            self.loop.call_soon_threadsafe(self.loop.stop)


def pattern(n: int) -> bytes:
    block = bytes(range(256)) * 64
    return (block * (n // len(block) + 1))[:n]


async def request(port: int, method: str, target: str, body: bytes = b"",
                  timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, buf = [], rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out.append(buf[:size])
            buf = buf[size + 2:]
        rest = b"".join(out)
    return int(lines[0].split()[1]), headers, rest


def test_proxy_500_concurrent_clients_on_4_threads() -> None:
    upstream = Upstream("slow", delay=0.2, gate=400).start()
    try:
        with example("examples.proxy:app", threads=4, env={"UPSTREAM": upstream.url}) as port:
            async def main() -> list[tuple[int, dict[str, str], bytes]]:
                return await asyncio.gather(*(request(port, "GET", f"/item/{i}?x={i}") for i in range(500)))

            results = asyncio.run(main())
        assert [status for status, _, _ in results] == [200] * 500
        for i, (_, headers, body) in enumerate(results):
            assert json.loads(body) == {"name": "slow", "target": f"/item/{i}?x={i}"}
            assert headers["content-type"] == "application/json"
        print(f"proxy: 500/500 ok, upstream max in flight {upstream.counter['max']}")
        assert upstream.counter["total"] == 500
        assert upstream.counter["max"] >= 400, upstream.counter
    finally:
        upstream.stop()


def test_proxy_relays_a_large_body_in_chunks() -> None:
    upstream = Upstream("big").start()
    try:
        with example("examples.proxy:app", threads=2, env={"UPSTREAM": upstream.url}) as port:
            async def main() -> list[tuple[int, dict[str, str], bytes]]:
                return await asyncio.gather(*(request(port, "GET", f"/big/{n}") for n in (0, 65536, 3_000_001)))

            results = asyncio.run(main())
        for (status, headers, body), n in zip(results, (0, 65536, 3_000_001), strict=True):
            assert status == 200 and headers["content-length"] == str(n) and body == pattern(n)
    finally:
        upstream.stop()


def test_proxy_client_leaving_mid_body_closes_the_upstream_response() -> None:
    upstream = Upstream("big").start()
    try:
        with example("examples.proxy:app", threads=2, env={"UPSTREAM": upstream.url}) as port:
            import socket

            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /big/30000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            got = 0
            while got < 1_000_000:
                got += len(sock.recv(65536))
            sock.close()  # 1 MB of 30 MB read: the proxy must drop the upstream response
            assert wait_for(lambda: upstream.counter["aborted"] == 1)
            # and it still serves
            assert asyncio.run(request(port, "GET", "/big/10"))[2] == pattern(10)
    finally:
        upstream.stop()


def test_proxy_reports_a_dead_upstream_as_502() -> None:
    with example("examples.proxy:app", threads=2, env={"UPSTREAM": "http://127.0.0.1:9"}) as port:
        status, _, body = asyncio.run(request(port, "GET", "/"))
    assert status == 502 and body.startswith(b"upstream error: ConnectError")


def test_aggregator_fans_out_to_three_upstreams_at_once() -> None:
    """Each upstream holds its request until all three are in flight: one request, three calls."""
    first = Upstream("alpha", gate=3).start()
    ups = [first, Upstream("beta", gate=3, shared=first).start(), Upstream("gamma", gate=3, shared=first).start()]
    try:
        env = {"UPSTREAMS": ",".join(u.url for u in ups) + ",http://127.0.0.1:9"}
        with example("examples.aggregator:app", threads=2, env=env) as port:
            status, _, body = asyncio.run(request(port, "GET", "/search?q=wsgi"))
        merged = json.loads(body)
        assert status == 200
        assert merged["results"] == {u.url: {"name": u.name, "target": "/search?q=wsgi"} for u in ups}
        assert list(merged["errors"]) == ["http://127.0.0.1:9"]
        assert first.counter["max"] == 3
    finally:
        for u in reversed(ups):  # the first owns the shared loop
            u.stop()


def test_feed_holds_1000_long_polls_and_100_event_streams_on_4_threads() -> None:
    n_poll, n_sse = 1000, 100
    with example("examples.feed:app", threads=4) as port:
        async def sse_client() -> list[str]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
            events: list[str] = []
            buf = b""
            while len(events) < 2:
                buf += await asyncio.wait_for(reader.read(65536), 60)
                events = re.findall(r"data: (\w+)", buf.decode())
            writer.close()
            return events

        async def main() -> tuple[list[Any], list[Any], int]:
            polls = [asyncio.create_task(request(port, "GET", "/poll?after=0")) for _ in range(n_poll)]
            streams = [asyncio.create_task(sse_client()) for _ in range(n_sse)]
            waiting = 0
            for _ in range(600):  # bounded: up to ~60 s
                _, _, body = await request(port, "GET", "/stats")
                waiting = json.loads(body)["waiting"]
                if waiting == n_poll + n_sse:
                    break
                await asyncio.sleep(0.1)
            await request(port, "POST", "/publish", b"first")
            results = await asyncio.gather(*polls)
            await request(port, "POST", "/publish", b"second")
            return results, await asyncio.gather(*streams), waiting

        polls, streams, waiting = asyncio.run(main())
    assert waiting == n_poll + n_sse  # all waiting at once, on 4 threads
    assert {(status, body) for status, _, body in polls} == {
        (200, json.dumps({"messages": [{"id": 1, "text": "first"}]}).encode())}
    assert streams == [["first", "second"]] * n_sse


def test_flask_example() -> None:
    with example("examples.flask_app:app", threads=2) as port:
        async def main() -> list[Any]:
            hellos = [request(port, "GET", f"/hello/u{i}?ms=50") for i in range(40)]
            squares = [request(port, "GET", f"/square/{i}") for i in range(10)]
            temps = [request(port, "GET", f"/temp/{c}?ms=50") for c in ["paris", "oslo", "atlantis"] * 10]
            return await asyncio.gather(*hellos, *squares, *temps)

        results = asyncio.run(main())
    for (status, headers, body), city in zip(results[50:], ["paris", "oslo", "atlantis"] * 10, strict=True):
        if city == "atlantis":
            assert status == 404
        else:
            assert status == 200 and json.loads(body)["city"] == city
            assert headers["cache-control"] == "max-age=60"
    results = results[:50]
    for i, (status, _, body) in enumerate(results[:40]):
        data = json.loads(body)
        assert status == 200 and data["hello"] == f"u{i}" and data["path"] == f"/hello/u{i}"
        assert data["app"] == "examples.flask_app" and data["waited_ms"] >= 50
    assert [r[2] for r in results[40:]] == [f"{i}^2 = {i * i}\n".encode() for i in range(10)]


def test_django_example(tmp_path: Path) -> None:
    """8 orders at once; SQLite takes one writer, so their transactions queue (suspended)."""
    env = {"DJANGO_EXAMPLE_DB": str(tmp_path / "orders.sqlite3")}
    with example("examples.django_app:application", threads=2, env=env) as port:
        async def main() -> tuple[list[Any], Any]:
            created = await asyncio.gather(*(request(port, "POST", f"/orders/sku{i}") for i in range(8)))
            return created, await request(port, "GET", "/orders")

        created, listing = asyncio.run(main())
    assert all(status == 200 for status, _, _ in created)
    prices = {json.loads(body)["sku"]: json.loads(body)["price"] for _, _, body in created}
    assert prices == {f"sku{i}": 100 + len(f"sku{i}") for i in range(8)}
    orders = json.loads(listing[2])["orders"]
    assert sorted((o["sku"], o["state"], o["price"]) for o in orders) == sorted(
        (f"sku{i}", "priced", 100 + len(f"sku{i}")) for i in range(8))


@pytest.mark.parametrize("module", ["upstream"])
def test_demo_upstream_runs_with_its_command(module: str) -> None:
    proc = subprocess.Popen([sys.executable, f"examples/{module}.py", "--port", "0", "--delay", "0",
                             "--name", "demo"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        port = int(line.rsplit(":", 1)[1])
        status, _, body = asyncio.run(request(port, "GET", "/a?b=1"))
        assert status == 200 and json.loads(body) == {"name": "demo", "path": "/a", "query": "b=1"}
    finally:
        proc.terminate()
        proc.wait(10)
