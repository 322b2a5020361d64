"""The same example apps on wsgiref, waitress, gunicorn (sync and gthread) and WSGI+, each for real.

Each server is started as a subprocess with its own command line on a free
loopback port. ``examples.aggregator`` (three upstream calls in one
``bridge.gather`` future) runs everywhere; ``examples.feed`` (a long poll and
a ``pause_output`` event stream woken by a publish) needs a second request
served while one waits, so it runs on the servers with threads. On plain
servers ``wsgiplus.compat.portable`` waits for the futures in the worker thread;
the control shows the same app without it is broken there.

Run as a script, this module is the wsgiref launcher:
``python tests/test_portability.py module:app`` (threaded wsgiref server, port 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SERVERS = {
    "wsgiref": lambda spec: [sys.executable, str(Path(__file__).resolve()), spec],
    "waitress": lambda spec: [sys.executable, "-m", "waitress", "--listen=127.0.0.1:0", "--threads=4", spec],
    "gunicorn-sync": lambda spec: [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "-k", "sync",
                                   "--no-control-socket", "--graceful-timeout", "2", spec],
    "gunicorn-gthread": lambda spec: [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "-k", "gthread",
                                      "--threads", "4", "--no-control-socket", "--graceful-timeout", "2", spec],
    "wsgiplus": lambda spec: [sys.executable, "-m", "wsgiplus", spec, "--bind", "127.0.0.1:0",
                              "--threads", "2", "--no-access-log"],
}
THREADED = ["wsgiref", "waitress", "gunicorn-gthread", "wsgiplus"]
PORT_LINE = re.compile(r"(?:listening on |Serving on http://|Listening at: http://)127\.0\.0\.1:(\d+)",
                       re.IGNORECASE)


@contextlib.contextmanager
def server(kind: str, spec: str, env: dict[str, str]) -> Iterator[int]:
    proc = subprocess.Popen(SERVERS[kind](spec), cwd=ROOT, stderr=subprocess.STDOUT, stdout=subprocess.PIPE,
                            text=True, start_new_session=True, env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}", **env))
    log: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            log.append(line)
            m = PORT_LINE.search(line)
            if m:
                port = int(m.group(1))
        assert port, f"{kind} did not start:\n" + "".join(log)
        threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        if kind.startswith("gunicorn"):  # the master listens before its worker has booted
            _wait_until_served(port)
        yield port
    finally:
        stop_group(proc, 15)


def stop_group(proc: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM the server, then SIGKILL its whole session: no worker outlives the test."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _wait_until_served(port: int) -> None:
    from test_examples import request

    for _ in range(100):
        with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError, IndexError):
            asyncio.run(request(port, "GET", "/stats", timeout=5))
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[str]]:
    from test_examples import Upstream

    first = Upstream("alpha").start()
    ups = [first, Upstream("beta", shared=first).start(), Upstream("gamma", shared=first).start()]
    yield [u.url for u in ups]
    for u in reversed(ups):
        u.stop()


@pytest.mark.parametrize("kind", list(SERVERS))
def test_aggregator_everywhere(kind: str, upstreams: list[str]) -> None:
    from test_examples import request

    with server(kind, "examples.aggregator:app", {"UPSTREAMS": ",".join(upstreams)}) as port:
        async def main() -> list[tuple[int, dict[str, str], bytes]]:
            return await asyncio.gather(*(request(port, "GET", f"/q/{i}?n={i}") for i in range(6)))

        results = asyncio.run(main())
    for i, (status, _, body) in enumerate(results):
        assert status == 200, body
        merged = json.loads(body)
        assert merged == {"errors": {}, "results": {
            url: {"name": name, "target": f"/q/{i}?n={i}"}
            for url, name in zip(upstreams, ["alpha", "beta", "gamma"], strict=True)}}


@pytest.mark.parametrize("kind", THREADED)
def test_feed_long_poll_and_pause_output_everywhere(kind: str) -> None:
    from test_examples import request

    with server(kind, "examples.feed:app", {}) as port:
        async def main() -> tuple[tuple[int, dict[str, str], bytes], str]:
            poll = asyncio.create_task(request(port, "GET", "/poll?after=0"))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
            buf = b""
            while b": connected" not in buf:
                buf += await asyncio.wait_for(reader.read(4096), 30)
            for _ in range(300):  # the poll and the stream both wait (bounded)
                _, _, stats = await request(port, "GET", "/stats")
                if json.loads(stats)["waiting"] == 2:
                    break
                await asyncio.sleep(0.05)
            await request(port, "POST", "/publish", b"hello")
            while b"data: hello" not in buf:
                buf += await asyncio.wait_for(reader.read(4096), 30)
            writer.close()
            return await asyncio.wait_for(poll, 30), buf.decode()

        (status, _, body), stream = asyncio.run(main())
    assert status == 200 and json.loads(body) == {"messages": [{"id": 1, "text": "hello"}]}
    assert "id: 1\ndata: hello\n\n" in stream


@pytest.mark.parametrize("kind", ["waitress", "gunicorn-gthread", "wsgiplus"])
def test_flask_and_django_examples_on_threaded_servers(kind: str, tmp_path: Path) -> None:
    from test_examples import request

    with server(kind, "examples.flask_app:app", {}) as port:
        status, _, body = asyncio.run(request(port, "GET", "/hello/ann?ms=10"))
        assert status == 200 and json.loads(body)["hello"] == "ann"
        assert asyncio.run(request(port, "GET", "/square/7"))[2] == b"7^2 = 49\n"
        status, _, body = asyncio.run(request(port, "GET", "/temp/oslo?ms=10"))  # async def view
        assert status == 200 and json.loads(body) == {"city": "oslo", "celsius": -3}
        assert asyncio.run(request(port, "GET", "/temp/atlantis?ms=10"))[0] == 404
    env = {"DJANGO_EXAMPLE_DB": str(tmp_path / "orders.sqlite3")}
    with server(kind, "examples.django_app:application", env) as port:
        async def orders() -> list[tuple[int, dict[str, str], bytes]]:
            return await asyncio.gather(*(request(port, "POST", f"/orders/s{i}") for i in range(3)))

        created = asyncio.run(orders())
        assert sorted(json.loads(b)["price"] for _, _, b in created) == [102, 102, 102]
        listing = json.loads(asyncio.run(request(port, "GET", "/orders"))[2])["orders"]
    assert sorted((o["sku"], o["state"]) for o in listing) == [(f"s{i}", "priced") for i in range(3)]


def test_control_without_the_shim_a_plain_server_breaks() -> None:
    """The same aggregator, unwrapped (``app.__wrapped__``), on wsgiref: the future is not bytes."""
    from test_examples import request

    with server("wsgiref", "examples.aggregator:app.__wrapped__", {"UPSTREAMS": "http://127.0.0.1:9"}) as port:
        status, _, _ = asyncio.run(request(port, "GET", "/"))
    assert status == 500


def _serve_wsgiref(spec: str) -> None:
    import importlib
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    module, _, attrs = spec.partition(":")
    app = importlib.import_module(module)
    for attr in attrs.split("."):
        app = getattr(app, attr)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = make_server("127.0.0.1", 0, app, server_class=Server, handler_class=Quiet)
    print(f"wsgiref listening on 127.0.0.1:{httpd.server_port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    _serve_wsgiref(sys.argv[1])


def test_shim_waits_for_asyncio_futures_and_bounds_pauses_in_process() -> None:
    """In-process wsgiref: an asyncio future of another loop is waited for on its loop; a pause
    never resumed fails after ``timeout`` instead of holding the thread for ever."""
    import http.client
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from wsgiplus import bridge
    from wsgiplus.compat import portable

    async def make_task() -> asyncio.Future[bytes]:
        return asyncio.ensure_future(asyncio.sleep(0.001, b"from-asyncio"))

    @portable(timeout=0.5)
    def app(environ: dict, start_response: object) -> Iterator[object]:
        task = bridge.run(make_task()).result(10)  # an asyncio.Task on the bridge loop
        yield task
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        yield task.result()
        if environ["PATH_INFO"] == "/stuck":
            environ["wsgi.pause_output"]()  # nobody will resume
            yield b""
            yield b"never"

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"from-asyncio"
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=10)
        conn.request("GET", "/stuck")
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        assert body == b"from-asyncio"  # then the wait timed out and the response was cut
        # the single-threaded wsgiref server has its thread back
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"from-asyncio"
    finally:
        httpd.shutdown()
        httpd.server_close()
