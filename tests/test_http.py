"""HTTP/1.1 behaviour over real sockets: keep-alive, pipelining, chunked, HEAD, 100-continue, errors."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from conftest import dechunk, hello_app, raw_exchange, read_until_close, wait_for


def echo_app(environ: dict, start_response: Any) -> list[bytes]:
    """Echoes the body and the interesting environ keys."""
    body = environ["wsgi.input"].read()
    info = "|".join(
        f"{k}={environ.get(k, '')}"
        for k in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_LENGTH",
                  "CONTENT_TYPE", "SERVER_PROTOCOL", "HTTP_X_TEST")
    )
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Info", info)])
    return [body]


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into (status, headers, body) responses."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        if status == 100:
            data = rest
            continue
        if headers.get("transfer-encoding") == "chunked":
            end = rest.index(b"0\r\n\r\n")
            while True:  # find the real terminator by walking chunks
                size_line, _, after = rest.partition(b"\r\n")
                body = dechunk(rest)
                consumed = 0
                r = rest
                while True:
                    sl, _, a = r.partition(b"\r\n")
                    size = int(sl.split(b";")[0], 16)
                    consumed += len(sl) + 2 + size + 2
                    if size == 0:
                        break
                    r = a[size + 2 :]
                data = rest[consumed:]
                del end, size_line, after
                break
        else:
            length = int(headers.get("content-length", "0"))
            body, data = rest[:length], rest[length:]
        out.append((status, headers, body))
    return out


def test_get_with_httpx_and_headers(serve: Any) -> None:
    server = serve(hello_app)
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.text == "Hello, world!"
    assert r.headers["server"] == "wsgiplus" and "date" in r.headers
    assert r.headers["content-length"] == "13"


def test_environ_basics(serve: Any) -> None:
    server = serve(echo_app, root_path="/app")
    r = httpx.get(server.url + "/app/a%20b/%E2%82%AC?x=1&y=%20", headers={"X-Test": "yes"})
    info = dict(p.split("=", 1) for p in r.headers["x-info"].encode("utf-8").decode("latin-1").split("|"))
    assert info["SCRIPT_NAME"] == "/app"
    assert info["PATH_INFO"] == "/a b/" + "€".encode().decode("latin-1")  # PEP 3333: latin-1 str
    assert info["QUERY_STRING"] == "x=1&y=%20"
    assert info["HTTP_X_TEST"] == "yes" and info["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_underscore_headers_are_dropped(serve: Any) -> None:
    server = serve(echo_app)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nX_Test: spoof\r\nConnection: close\r\n\r\n")
    assert b"HTTP_X_TEST=\r\n" in raw


def test_keep_alive_and_http10(serve: Any) -> None:
    server = serve(hello_app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while not data.endswith(b"Hello, world!"):
                data += sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 200 OK")
    raw = raw_exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in raw and raw.endswith(b"Hello, world!")  # closed by the server
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        time.sleep(0.2)
        first = sock.recv(4096)
        assert b"Connection: keep-alive" in first
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        rest = read_until_close(sock)
        assert rest.endswith(b"Hello, world!")


def test_http10_without_length_is_close_delimited(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"a"
        yield b"b"

    server = serve(app)
    raw = raw_exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert b"Transfer-Encoding" not in raw and raw.endswith(b"\r\n\r\nab")


def test_pipelined_responses_keep_request_order(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if path == "/slow":
            fut: Future = Future()
            threading.Timer(0.2, fut.set_result, args=(None,)).start()
            yield fut
        body = path.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        yield body

    server = serve(app, threads=4)
    reqs = b"".join(
        f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in ("/slow", "/a", "/slow", "/b")
    ) + b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(server.port, reqs)
    bodies = [body for _, _, body in parse_responses(raw)]
    assert bodies == [b"/slow", b"/a", b"/slow", b"/b", b"/last"]


def test_chunked_request_and_response(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"len=%d:" % len(data)
        yield data
        yield environ["CONTENT_LENGTH"].encode()

    server = serve(app)
    raw = raw_exchange(
        server.port,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    )
    assert b"Transfer-Encoding: chunked" in raw
    assert dechunk(raw.partition(b"\r\n\r\n")[2]) == b"len=11:hello world11"


def test_head_sends_no_body(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"body that must not be sent"

    server = serve(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = read_until_close(sock)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK") and b"chunked" not in first
    assert rest.startswith(b"HTTP/1.1 200 OK")  # the next response follows at once: no body in between


def test_expect_100_continue(serve: Any) -> None:
    server = serve(echo_app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        data = b""
        while not data.endswith(b"hello"):
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 200 OK")


def test_expect_100_refused_by_size_gets_413_without_100(serve: Any) -> None:
    server = serve(echo_app, max_body_size=10)
    raw = raw_exchange(
        server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\nExpect: 100-continue\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in raw


def test_large_body_is_spooled_and_read_in_every_way(serve: Any) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict, start_response: Any) -> Any:
        stream = environ["wsgi.input"]
        seen["first_line"] = stream.readline()
        seen["next"] = stream.readline(5)
        seen["lines"] = stream.readlines()
        start_response("200 OK", [])
        return [b"%d" % (len(seen["first_line"]) + len(seen["next"]) + sum(map(len, seen["lines"])))]

    server = serve(app, body_spool_size=1024)
    payload = b"line one\n" + b"x" * 5000 + b"\n" + b"tail"
    r = httpx.post(server.url + "/", content=payload)
    assert r.text == str(len(payload))
    assert seen["first_line"] == b"line one\n" and seen["next"] == b"xxxxx"
    assert seen["lines"][-1] == b"tail"


def test_body_too_large_chunked_gets_413(serve: Any) -> None:
    server = serve(echo_app, max_body_size=10)
    raw = raw_exchange(
        server.port,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 413 ")


MALFORMED = [
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 40\r\n\r\nxGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\nHost: t\n\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to a plain port
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_requests_get_400_and_close(serve: Any, data: bytes) -> None:
    calls: list[str] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    server = serve(app)
    raw = raw_exchange(server.port, data)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert b"Connection: close" in raw
    assert calls == []  # neither the bad request nor a smuggled one reached the app


def test_valid_request_ahead_of_garbage_is_answered(serve: Any) -> None:
    server = serve(hello_app)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n")
    responses = parse_responses(raw)
    assert [s for s, _, _ in responses] == [200, 400]


def test_limits_answered_414_431(serve: Any) -> None:
    server = serve(hello_app, max_request_line=100, max_header_count=5, max_header_size=200)
    assert raw_exchange(server.port, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
        b"HTTP/1.1 414 "
    )
    many = b"".join(b"X-%d: v\r\n" % i for i in range(10))
    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n").startswith(
        b"HTTP/1.1 431 "
    )
    big = b"X-Big: " + b"v" * 300 + b"\r\n"
    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n").startswith(
        b"HTTP/1.1 431 "
    )


def test_content_length_is_never_exceeded(serve: Any, caplog: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345", b"6789"]

    server = serve(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = read_until_close(sock)
    assert [b for _, _, b in parse_responses(raw)] == [b"12345", b"12345"]


def test_short_body_closes_the_connection(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        return [b"123", b"45"]

    server = serve(app)
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # returns only once closed
    assert raw.endswith(b"12345")


@pytest.mark.parametrize(
    "headers",
    [
        [("Transfer-Encoding", "chunked")],
        [("X-Bad", "a\r\nInjected: yes")],
        [("Bad Name", "x")],
    ],
)
def test_bad_response_headers_are_app_errors(serve: Any, headers: list, caplog: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"x"]

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="wsgiplus.error"):
        raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 500 ") and b"Injected" not in raw
    assert "Traceback" in caplog.text


def test_start_response_exc_info_rules(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("x")
        except KeyError:
            import sys

            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"replaced"

    server = serve(app)
    r = httpx.get(server.url + "/")
    assert r.status_code == 503 and r.text == "replaced"


def test_second_start_response_without_exc_info_is_an_error(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"x"]

    server = serve(app)
    assert httpx.get(server.url + "/").status_code == 500


def test_legacy_write_callable(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return [b"returned"]

    server = serve(app)
    assert httpx.get(server.url + "/").text == "written then returned"


def test_file_wrapper(serve: Any, tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(300_000))

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", str(path.stat().st_size))])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)

    server = serve(app)
    assert httpx.get(server.url + "/").content == path.read_bytes()


def test_header_timeout_drops_slowloris(serve: Any, caplog: Any) -> None:
    server = serve(hello_app, header_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        with caplog.at_level(logging.INFO, logger="wsgiplus.error"):
            raw = read_until_close(sock, timeout=5)
    assert raw.startswith(b"HTTP/1.1 408 ")


def test_keepalive_timeout_closes_idle_connection(serve: Any) -> None:
    server = serve(hello_app, keepalive_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = read_until_close(sock, timeout=5)  # ends because the server closes the idle connection
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"Hello, world!")
    assert wait_for(lambda: not server.server.connections)


def test_body_timeout(serve: Any) -> None:
    server = serve(echo_app, body_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        raw = read_until_close(sock, timeout=5)
    assert raw.startswith(b"HTTP/1.1 408 ")


def test_unix_socket(serve: Any, tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    server = serve(hello_app, bind=[f"unix:{path}"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_until_close(sock).endswith(b"Hello, world!")
    server.stop()
    assert not os.path.exists(path)


def test_ipv6_loopback(serve: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no ::1 on this machine")
    server = serve(hello_app, bind=["[::1]:0"])
    assert server.address.startswith("[::1]:")
    with socket.create_connection(("::1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_until_close(sock).endswith(b"Hello, world!")


def test_http_client_many_requests_one_connection(serve: Any) -> None:
    server = serve(echo_app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for i in range(50):
        body = b"x" * i
        conn.request("POST", f"/n/{i}", body=body)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == body
    conn.close()


def test_garbage_never_reaches_the_app_unparsed_and_the_server_keeps_serving(serve: Any) -> None:
    """Seeded mutations over real sockets: every answer is a well-formed status line or nothing."""
    import random

    seen: list[str] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        seen.append(environ["REQUEST_METHOD"])
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = serve(app, header_timeout=1, body_timeout=1)
    rng = random.Random(7)
    base = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    answered = 0
    for _ in range(150):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            data[pos : pos + 1] = bytes([rng.randrange(256)])
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(bytes(data))
            sock.shutdown(socket.SHUT_WR)
            raw = read_until_close(sock, timeout=5)
        # a client that half-closes is treated as gone, so a valid request may go unanswered
        assert raw == b"" or raw.startswith(b"HTTP/1.1 "), raw[:60]
        answered += raw.startswith(b"HTTP/1.1 4")
    assert answered > 50  # most mutations are refused with a 4xx before the close
    assert all(m.isupper() for m in seen)
    assert wait_for(lambda: server.server.pool.busy() == 0 and server.server.active == 0)
    r = httpx.post(server.url + "/ok", content=b"still here")
    assert r.status_code == 200 and r.content == b"still here"
