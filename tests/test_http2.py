"""HTTP/2 over real sockets: prior knowledge, Upgrade: h2c, ALPN, the WSGI+ contract per stream.

Concurrency is proven with barriers (futures completed only when every
stream is suspended), never with durations.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from concurrent.futures import Future
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
from conftest import raw_exchange, wait_for
from h2client import H2Client

from wsgiplus.testing import ServerThread


def echo_app(environ: dict, start_response: Any) -> list[bytes]:
    keys = {k: v for k, v in environ.items() if isinstance(v, str)}
    keys["body"] = environ["wsgi.input"].read().decode("latin-1")
    keys["trailers"] = environ.get("wsgiplus.trailers")
    body = json.dumps(keys).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Served", "yes")])
    return [body]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: Any) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return str(cert), str(key)


# -- the three ways in -------------------------------------------------------------------


LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("uvloop") is None, reason="uvloop not installed"))]


@pytest.mark.parametrize("loop", LOOPS)
def test_prior_knowledge_environ(serve: Any, loop: str) -> None:
    server = serve(echo_app, loop=loop)
    client = H2Client(server.port)
    resp = client.get("/p%20q?x=1", headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-thing", b"v")])
    client.close()
    assert resp.status == 200 and resp.header(b"x-served") == b"yes"
    assert resp.header(b"content-length") == str(len(resp.body)).encode()
    assert resp.header(b"server") == b"wsgiplus" and resp.header(b"date")
    env = json.loads(resp.body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"]) == ("GET", "/p q", "x=1")
    assert env["HTTP_HOST"] == "localhost" and env["HTTP_COOKIE"] == "a=1; b=2" and env["HTTP_X_THING"] == "v"
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_request_bodies_with_and_without_content_length(serve: Any) -> None:
    server = serve(echo_app)
    client = H2Client(server.port)
    a = client.request("POST", "/a", headers=[(b"content-length", b"5")], body=b"hello")
    b = client.request("POST", "/b", body=b"x" * 100_000)  # no length: CONTENT_LENGTH is the size
    c = client.request("POST", "/c", body=b"trailing", end=False)
    client.conn.send_headers(c, [(b"x-trailer", b"1")], end_stream=True)  # trailers
    client.flush()
    assert client.wait(lambda: client.done(a, b, c))
    envs = [json.loads(client.responses[s].body) for s in (a, b, c)]
    client.close()
    assert (envs[0]["CONTENT_LENGTH"], envs[0]["body"]) == ("5", "hello")
    assert (envs[1]["CONTENT_LENGTH"], len(envs[1]["body"])) == ("100000", 100_000)
    assert envs[2]["body"] == "trailing" and "HTTP_X_TRAILER" not in envs[2]  # trailers not merged
    assert envs[2]["trailers"] == [["x-trailer", "1"]] and envs[0]["trailers"] is None


def test_http11_still_served_on_the_same_listener(serve: Any) -> None:
    server = serve(echo_app)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK")
    # a preface split over several reads is still recognised
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        data = conn.data_to_send()
        for i in range(0, 30, 3):
            sock.sendall(data[i : i + 3])
        sock.sendall(data[30:])
        sock.settimeout(10)
        assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in conn.receive_data(sock.recv(65536)))


def test_http2_off_answers_the_preface_as_http11(serve: Any) -> None:
    server = serve(echo_app, http2=False)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    answer = raw_exchange(server.port, conn.data_to_send())
    assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("loop", LOOPS)
def test_upgrade_h2c(serve: Any, loop: str) -> None:
    server = serve(echo_app, loop=loop)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    settings = conn.initiate_upgrade_connection().rstrip(b"=")  # already base64url; token68 unpadded
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /up?z=9 HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
        sock.settimeout(10)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, buf
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(conn.data_to_send())  # the client preface
        events = conn.receive_data(rest) if rest else []
        body = b""
        status = None
        for _ in range(50):
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                    status = dict(ev.headers)[b":status"]
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == 1:
                    body += ev.data
            if any(isinstance(e, h2.events.StreamEnded) for e in events):
                break
            sock.sendall(conn.data_to_send())
            data = sock.recv(65536)
            assert data
            events = conn.receive_data(data)
        assert status == b"200"
        env = json.loads(body)
        assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["PATH_INFO"] == "/up" and env["QUERY_STRING"] == "z=9"
        assert "HTTP_UPGRADE" not in env and "HTTP_HTTP2_SETTINGS" not in env
        # the connection goes on in HTTP/2
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"),
                                (b":path", b"/second")], end_stream=True)
        sock.sendall(conn.data_to_send())
        ended = False
        for _ in range(50):
            events = conn.receive_data(sock.recv(65536))
            sock.sendall(conn.data_to_send())
            if any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in events):
                ended = True
                break
        assert ended


def test_httpx_prior_knowledge(serve: Any) -> None:
    server = serve(echo_app)
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        responses = [client.get(f"{server.url}/n{i}") for i in range(5)]
    assert [r.http_version for r in responses] == ["HTTP/2"] * 5
    assert [json.loads(r.content)["PATH_INFO"] for r in responses] == [f"/n{i}" for i in range(5)]


@pytest.mark.parametrize("loop", LOOPS)
def test_httpx_tls_alpn(serve: Any, certificate: tuple[str, str], loop: str) -> None:
    cert, key = certificate
    server = serve(echo_app, certfile=cert, keyfile=key, loop=loop)
    ctx = ssl.create_default_context(cafile=cert)
    with httpx.Client(http2=True, verify=ctx, timeout=10) as client:
        r = client.get(f"https://localhost:{server.port}/tls")
    assert r.http_version == "HTTP/2" and r.status_code == 200
    env = json.loads(r.content)
    assert env["wsgi.url_scheme"] == "https" and env["SERVER_PROTOCOL"] == "HTTP/2"
    # a client that offers only http/1.1 still gets HTTP/1.1
    with httpx.Client(http2=False, verify=ctx, timeout=10) as client:
        assert client.get(f"https://localhost:{server.port}/").http_version == "HTTP/1.1"


def test_httpx_tls_without_http2_setting(serve: Any, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    server = serve(echo_app, certfile=cert, keyfile=key, http2=False)
    ctx = ssl.create_default_context(cafile=cert)
    with httpx.Client(http2=True, verify=ctx, timeout=10) as client:
        assert client.get(f"https://localhost:{server.port}/").http_version == "HTTP/1.1"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2_prior_knowledge(serve: Any) -> None:
    if "HTTP2" not in subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout:
        pytest.skip("this curl has no HTTP/2")
    server = serve(echo_app)
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version}",
                          "--max-time", "20", f"{server.url}/curl"], capture_output=True, text=True, timeout=30)
    body, _, version = out.stdout.rpartition("\n")
    assert version == "2" and json.loads(body)["PATH_INFO"] == "/curl"
    out = subprocess.run(["curl", "-s", "--http2", "-o", "-", "-w", "\n%{http_version}", "--max-time", "20",
                          f"{server.url}/upgrade"], capture_output=True, text=True, timeout=30)
    body, _, version = out.stdout.rpartition("\n")
    assert version == "2" and json.loads(body)["PATH_INFO"] == "/upgrade"  # via Upgrade: h2c


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (Debian nghttp2-client) not installed")
def test_h2load(serve: Any) -> None:
    def hello(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    server = serve(hello, threads=4, access_log=False)
    out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "50", server.url + "/"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 2000 2xx" in out, out


# -- the WSGI+ contract, per stream ----------------------------------------------------


def test_barrier_100_streams_one_connection_two_threads(serve: Any) -> None:
    """Must show 1: 100 streams on one connection, --threads 2, each suspended on a future
    that completes only once all 100 are suspended: all 100 get 200."""
    lock = threading.Lock()
    futures: list[Future] = []

    def app(environ: dict, start_response: Any) -> Any:
        fut: Future = Future()
        with lock:
            futures.append(fut)
            if len(futures) == 100:
                for f in futures:
                    f.set_result(len(futures))
        yield fut
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"%d" % fut.result()

    server = serve(app, threads=2)
    client = H2Client(server.port, timeout=30)
    sids = [client.request("GET", f"/{i}") for i in range(100)]
    assert client.wait(lambda: client.done(*sids), timeout=60)
    client.close()
    assert [client.responses[s].status for s in sids] == [200] * 100
    assert {bytes(client.responses[s].body) for s in sids} == {b"100"}


class Watched:
    """An app iterable that yields one future and records its close()."""

    def __init__(self, futures: list, suspended: threading.Event, closed: threading.Event) -> None:
        self.futures, self.suspended, self.closed = futures, suspended, closed

    def __iter__(self) -> Any:
        fut: Future = Future()
        self.futures.append(fut)
        self.suspended.set()
        yield fut
        yield b"never"

    def close(self) -> None:
        self.closed.set()


def test_client_reset_while_suspended_closes_the_iterable_and_cancels_the_future(serve: Any) -> None:
    suspended, closed = threading.Event(), threading.Event()
    futures: list[Future] = []

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/other":
            return [b"other"]
        return Watched(futures, suspended, closed)

    server = serve(app, threads=1)
    client = H2Client(server.port)
    sid = client.request("GET", "/wait")
    assert suspended.wait(10)
    client.conn.reset_stream(sid)
    client.flush()
    assert closed.wait(10)
    assert wait_for(lambda: futures[0].cancelled())
    # the connection and its other streams go on
    assert client.get("/other").body == b"other"
    client.close()


def test_deadline_gives_504_on_its_stream_only(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/slow":
            yield Future()  # never completes
        start_response("200 OK", [])
        yield b"fast"

    server = serve(app, request_timeout=0.5)
    client = H2Client(server.port)
    slow = client.request("GET", "/slow")
    fast = client.get("/fast")
    assert fast.status == 200
    assert client.wait(lambda: client.done(slow), timeout=20)
    assert client.responses[slow].status == 504
    client.close()


def test_app_error_gives_500_and_error_after_head_resets_the_stream(serve: Any, caplog: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/before":
            raise RuntimeError("boom")
        start_response("200 OK", [])
        yield b"part"
        raise RuntimeError("after")

    server = serve(app)
    client = H2Client(server.port)
    with caplog.at_level(logging.ERROR, logger="wsgiplus.error"):
        assert client.get("/before").status == 500
        after = client.get("/after")
    assert after.reset == h2.errors.ErrorCodes.INTERNAL_ERROR and not after.ended
    assert "boom" in caplog.text
    client.close()


def test_content_length_is_never_exceeded_and_a_short_body_resets(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "4")])
        if environ["PATH_INFO"] == "/long":
            return [b"ab", b"cdef"]
        return iter([b"ab"])  # two bytes short

    server = serve(app)
    client = H2Client(server.port)
    long = client.get("/long")
    assert long.body == b"abcd" and long.ended
    short = client.get("/short")
    assert short.reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    client.close()


def test_head_and_204_send_no_body(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("204 No Content" if environ["PATH_INFO"] == "/none" else "200 OK", [])
        return [b"body"]

    server = serve(app)
    client = H2Client(server.port)
    head = client.responses[client.request("HEAD", "/")]
    assert client.wait(lambda: head.ended)
    assert head.status == 200 and head.body == b"" and head.header(b"content-length") == b"4"
    none = client.get("/none")
    assert none.status == 204 and none.body == b""
    client.close()


def test_file_wrapper_and_large_body_through_flow_control(serve: Any, tmp_path: Any) -> None:
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * 4096  # 1 MiB
    path.write_bytes(data)

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 32768)

    server = serve(app)
    S = h2.settings.SettingCodes
    client = H2Client(server.port, settings={S.INITIAL_WINDOW_SIZE: 16384})  # small windows
    resp = client.get("/")
    client.close()
    assert resp.ended and bytes(resp.body) == data


def test_slow_reader_stream_parks_without_a_thread(serve: Any) -> None:
    """A stream whose client never opens its window holds no thread: with --threads 1
    the other streams of the same connection are still served."""
    produced = []

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/big":
            for _ in range(64):
                produced.append(1)
                yield b"x" * 65536
        else:
            yield b"small"

    server = serve(app, threads=1)
    S = h2.settings.SettingCodes
    client = H2Client(server.port, settings={S.INITIAL_WINDOW_SIZE: 0})  # no stream may send data
    big = client.request("GET", "/big")
    assert wait_for(lambda: len(produced) >= 1)
    # the app is parked on backpressure: it produced a bounded amount, not 4 MiB
    client.read_once(0.5)
    assert len(produced) < 16
    small = client.request("GET", "/small")
    assert client.wait(lambda: client.responses[small].headers != [])
    assert client.responses[small].status == 200
    assert not client.responses[big].ended
    client.close()


def test_access_log_says_http_2_0(serve: Any) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("wsgiplus.access")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        server = serve(echo_app, access_log=True)
        client = H2Client(server.port)
        body = client.get("/logged?q=1").body
        client.close()
        assert wait_for(lambda: len(lines) >= 1, timeout=10)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert f'"GET /logged?q=1 HTTP/2.0" 200 {len(body)}' in lines[0], lines


def test_graceful_shutdown_finishes_streams_in_flight_with_goaway(serve: Any) -> None:
    release: Future = Future()
    started = threading.Event()

    def app(environ: dict, start_response: Any) -> Any:
        started.set()
        yield release
        start_response("200 OK", [])
        yield b"finished"

    server = ServerThread(app).start()
    client = H2Client(server.port, timeout=20)
    sid = client.request("GET", "/inflight")
    assert started.wait(10)
    stopper = threading.Thread(target=server.stop, args=(20,))
    stopper.start()
    assert client.wait(lambda: client.terminated is not None, timeout=10)
    assert client.terminated.last_stream_id == sid and client.terminated.error_code == 0
    assert stopper.is_alive()  # the server waits for the stream in flight
    release.set_result(None)
    assert client.wait(lambda: client.done(sid), timeout=20)
    resp = client.responses[sid]
    assert resp.status == 200 and resp.body == b"finished" and resp.ended
    stopper.join(30)
    assert not stopper.is_alive()
    assert client.wait(lambda: client.closed, timeout=10)


def test_proxy_headers_apply_to_streams(serve: Any) -> None:
    server = serve(echo_app, proxy_headers=True)
    client = H2Client(server.port)
    env = json.loads(client.get("/", headers=[(b"x-forwarded-for", b"203.0.113.9"),
                                               (b"x-forwarded-proto", b"https")]).body)
    client.close()
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"


def test_max_requests_sends_goaway_and_finishes_the_streams_in_flight() -> None:
    from wsgiplus.shell.supervisor import WorkerServer

    gate: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/slow":
            yield gate
        start_response("200 OK", [])
        yield environ["PATH_INFO"].encode()

    thread = ServerThread(app)
    thread.server = WorkerServer(app, thread.config, max_requests=3,
                                 on_max_requests=lambda: thread.server.request_stop())
    thread.start()
    try:
        client = H2Client(thread.port, timeout=20)
        slow = client.request("GET", "/slow")
        fast = [client.request("GET", f"/f{i}") for i in range(3)]
        assert client.wait(lambda: client.done(*fast) and client.terminated is not None, timeout=20)
        assert client.terminated.error_code == 0 and client.terminated.last_stream_id == fast[-1]
        assert not client.done(slow)
        gate.set_result(None)
        assert client.wait(lambda: client.done(slow), timeout=20)
        assert client.responses[slow].status == 200 and client.responses[slow].body == b"/slow"
        assert client.wait(lambda: client.closed, timeout=20)
    finally:
        thread.stop()


def test_max_suspended_refuses_streams_beyond_the_limit(serve: Any) -> None:
    gates: list[Future] = []

    def app(environ: dict, start_response: Any) -> Any:
        gate: Future = Future()  # one each: a refused suspension cancels its future
        gates.append(gate)
        yield gate
        start_response("200 OK", [])
        yield b"ok"

    server = serve(app, max_suspended=3)
    client = H2Client(server.port, timeout=20)
    sids = [client.request("GET", f"/{i}") for i in range(6)]
    assert client.wait(lambda: sum(client.responses[s].status == 503 for s in sids) == 3, timeout=20)
    for gate in gates:
        if not gate.cancelled():
            gate.set_result(None)
    assert client.wait(lambda: client.done(*sids), timeout=20)
    client.close()
    assert sorted(client.responses[s].status for s in sids) == [200] * 3 + [503] * 3


def test_pause_output_parks_a_stream_without_a_thread(serve: Any) -> None:
    resumes: list[Any] = []

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/paused":
            resumes.append(environ["wsgi.pause_output"]())
            yield b"before "
            yield b""  # parks until resume()
            yield b"after"
        else:
            yield b"other"

    server = serve(app, threads=1)
    client = H2Client(server.port)
    paused = client.request("GET", "/paused")
    assert client.wait(lambda: client.responses[paused].body == b"before ")
    assert client.get("/other").body == b"other"  # the only thread is free
    assert not client.responses[paused].ended
    resumes[0]()
    assert client.wait(lambda: client.done(paused))
    assert client.responses[paused].body == b"before after"
    client.close()


def test_early_hints_go_out_before_the_response(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        environ["wsgi.early_hints"]([("Link", "</style.css>; rel=preload; as=style")])
        start_response("200 OK", [])
        return [b"page"]

    server = serve(app)
    client = H2Client(server.port)
    resp = client.get("/")
    hints = [e for e in client.events if isinstance(e, h2.events.InformationalResponseReceived)]
    client.close()
    assert resp.status == 200 and resp.body == b"page"
    assert [dict(e.headers)[b":status"] for e in hints] == [b"103"]
    assert dict(hints[0].headers)[b"link"] == b"</style.css>; rel=preload; as=style"
