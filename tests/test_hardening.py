"""Issue 12 (and two items of 14): what an attacker or a misbehaving app tries, over real sockets."""

from __future__ import annotations

import logging
import random
import re
import socket
from typing import Any

import pytest
from conftest import raw_exchange, read_until_close
from test_http import parse_responses

from wsgiplus.protocols.http11 import encode_head
from wsgiplus.runner.wsgi import check_headers, check_status

CLOSE_GET = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

# What a head on the wire may contain: a status line, then field lines, then CRLF.
STATUS_LINE = re.compile(rb"HTTP/1\.1 [2-9][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [\t\x20-\x7e\x80-\xff]*")


def assert_clean_head(raw: bytes) -> tuple[bytes, list[bytes]]:
    """The response's head obeys RFC 9112 to the byte; returns (status line, field lines)."""
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    lines = head.split(b"\r\n")
    assert STATUS_LINE.fullmatch(lines[0]), lines[0]
    for line in lines[1:]:
        assert FIELD_LINE.fullmatch(line), line
    names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
    assert names.count(b"content-length") <= 1 and names.count(b"connection") <= 1
    assert not (b"content-length" in names and b"transfer-encoding" in names)
    return lines[0], lines[1:]


def app_with(status: Any, headers: Any) -> Any:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"body"]

    return app


# -- item 1: response splitting ------------------------------------------------------------

@pytest.mark.parametrize(("status", "headers"), [
    ("200 OK\n", []),
    ("200 OK\r\nX-Injected: 1", []),
    ("200 OK\x00", []),
    ("200", []),
    (" 200 OK", []),
    ("200 OK", [("X-Evil\n", "v")]),
    ("200 OK", [("Content-Length\n", "999")]),
    ("200 OK", [("Connection\n", "keep-alive")]),
    ("200 OK", [("X-Ok", "v\n")]),
    ("200 OK", [("X-Ok", "v\r\nX-Injected: 1")]),
    ("200 OK", [("X-Ok", "v\x00")]),
    ("200 OK", [("X-Ok", "\u2028")]),
    ("200 OK", [("X-Ok", "\u0100")]),
    ("200 OK", [("X-\u00e9", "v")]),
    ("200 OK", [("Content-Length", "4\n")]),
    ("200 OK", [("Content-Length", "\u0664")]),  # an Arabic-Indic digit: isdigit() says yes
])
def test_head_checks_are_full_matches(serve: Any, status: str, headers: list, caplog: Any) -> None:
    server = serve(app_with(status, headers))
    with caplog.at_level(logging.ERROR, logger="wsgiplus.error"):
        raw = raw_exchange(server.port, CLOSE_GET)
    assert raw.startswith(b"HTTP/1.1 500 "), raw[:120]
    assert b"Injected" not in raw and b"999" not in raw
    assert_clean_head(raw)
    assert "Error in app" in caplog.text


def test_fuzzed_response_heads_only_give_a_500_or_a_clean_head(serve: Any) -> None:
    """Seeded: statuses and fields built from dangerous pieces; on the wire only a 500 or a clean head."""
    rng = random.Random(12)
    pieces = ["200", "404", "100", "1", " ", "\t", "OK", "\r", "\n", "\r\n", "\x00", "\x7f", "\x0b",
              ":", "é", "\u2028", "\u0100", "\U0001f600", "X-A", "Content-Length", "Connection",
              "close", "Transfer-Encoding", "Keep-Alive", "5", "-1", "0x5", ",", ";"]

    def text(n: int) -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, n)))

    cases = []
    for _ in range(300):
        status = rng.choice(["200 OK", "204 No Content", text(4), "200 " + text(3), text(2) + " OK"])
        headers = [(rng.choice(["X-A", "Content-Length", "Connection", text(2)]),
                    rng.choice(["v", "4", "close", text(3)])) for _ in range(rng.randint(0, 3))]
        cases.append((status, headers))

    def app(environ: dict, start_response: Any) -> list[bytes]:
        status, headers = cases[int(environ["PATH_INFO"][1:])]
        start_response(status, list(headers))
        return [b"body"]

    server = serve(app)
    outcomes = {"500": 0, "clean": 0}
    for i, (status, headers) in enumerate(cases):
        raw = raw_exchange(server.port, b"GET /%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i)
        line, fields = assert_clean_head(raw)
        if line.startswith(b"HTTP/1.1 500 ") and status[:3] != "500":
            outcomes["500"] += 1
            try:  # the checks must have refused it: a 500 is never given for a head they allow
                encode_head(check_status(status), check_headers(list(headers)))
            except (ValueError, TypeError):
                continue
            raise AssertionError(f"500 for an accepted head {status!r} {headers!r}")
        outcomes["clean"] += 1
        assert line == b"HTTP/1.1 " + status.encode("latin-1")
        sent = [f"{n}: {v}".encode("latin-1") for n, v in headers
                if n.lower() not in ("connection", "keep-alive", "content-length")]
        assert [f for f in fields if f in sent] == sent  # the app's own fields, as given
    assert outcomes["500"] > 50 and outcomes["clean"] > 50, outcomes


def test_fuzzed_head_checks_unit() -> None:
    """The same rule without sockets, many more cases: accepted heads serialise to clean bytes."""
    rng = random.Random(1212)
    alphabet = "aZ09-_ :\t\r\n\x00\x01\x7f\x80\xffé\u0100\u2028\U0001f600,;\"()/"
    accepted = 0
    for _ in range(20000):
        status = rng.choice(["200 ", "302 ", "1", "200", ""]) + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        name = "X" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 2)))
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        try:
            head = encode_head(check_status(status), check_headers([(name, value)]))
        except (ValueError, TypeError):
            continue
        accepted += 1
        lines = head.lines.split(b"\r\n")
        assert lines[-1] == b""
        assert STATUS_LINE.fullmatch(lines[0]) and all(FIELD_LINE.fullmatch(x) for x in lines[1:-1])
    assert accepted > 100


# -- item 2: 1xx from start_response; 103 Early Hints ---------------------------------------

def test_1xx_from_start_response_is_a_500_and_pipelining_stays_paired(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/continue":
            start_response("100 Continue", [])
            return [b""]
        start_response("200 OK", [("Content-Length", "6")])
        return [b"second"]

    server = serve(app)
    raw = raw_exchange(server.port, b"GET /continue HTTP/1.1\r\nHost: t\r\n\r\n"
                                    b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 500 ") and b"100 Continue" not in raw
    assert b"second" not in raw  # the 500 closed the connection: nothing is paired with the wrong request


def test_early_hints_are_sent_before_the_final_response(serve: Any) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        environ["wsgi.early_hints"]([("Link", "</style.css>; rel=preload; as=style")])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    raw = raw_exchange(server.port, CLOSE_GET)
    hints, sep, rest = raw.partition(b"\r\n\r\n")
    assert hints == b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nok")
    # not to HTTP/1.0 clients, and bad hint fields are the app's error
    raw = raw_exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"103" not in raw

    def bad(environ: dict, start_response: Any) -> list[bytes]:
        environ["wsgi.early_hints"]([("Link", "x\r\nInjected: 1")])
        start_response("200 OK", [])
        return [b"ok"]

    raw = raw_exchange(serve(bad).port, CLOSE_GET)
    assert raw.startswith(b"HTTP/1.1 500 ") and b"Injected" not in raw


# -- item 3: Content-Length twice ----------------------------------------------------------

def test_two_different_content_lengths_are_a_500_identical_ones_collapse(serve: Any) -> None:
    raw = raw_exchange(serve(app_with("200 OK", [("Content-Length", "4"), ("Content-Length", "40")])).port,
                       CLOSE_GET)
    assert raw.startswith(b"HTTP/1.1 500 ")
    raw = raw_exchange(serve(app_with("200 OK", [("Content-Length", "4"), ("content-length", "04")])).port,
                       CLOSE_GET)
    _, fields = assert_clean_head(raw)
    assert [f for f in fields if f.lower().startswith(b"content-length")] == [b"Content-Length: 4"]
    assert raw.endswith(b"\r\n\r\nbody")


# -- item 4: a body that misses its Content-Length is logged -------------------------------

@pytest.mark.parametrize(("length", "words"), [("2", "longer"), ("10", "shorter")])
def test_body_missing_its_content_length_is_logged_once(serve: Any, caplog: Any, length: str,
                                                        words: str) -> None:
    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", length)])
        return [b"ab", b"cd"]

    server = serve(app)
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"):
        raw = raw_exchange(server.port, b"GET /the/path HTTP/1.1\r\nHost: t\r\n\r\n")
    assert raw.endswith(b"\r\n\r\nab" if words == "longer" else b"\r\n\r\nabcd")
    lines = [r.getMessage() for r in caplog.records if "Content-Length" in r.getMessage()]
    assert len(lines) == 1 and words in lines[0] and "/the/path" in lines[0], lines


# -- issue 14: Connection: close from the app is honoured, other hop-by-hop fields dropped ---

def test_app_connection_close_is_honoured(serve: Any) -> None:
    server = serve(app_with("200 OK", [("Content-Length", "4"), ("Connection", "close")]))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = read_until_close(sock)
    responses = parse_responses(raw)
    assert [s for s, _, _ in responses] == [200]  # closed after this response, the pipelined one not answered
    _, fields = assert_clean_head(raw)
    assert fields.count(b"Connection: close") == 1


def test_other_hop_by_hop_fields_are_dropped_with_one_warning_per_name(serve: Any, caplog: Any) -> None:
    server = serve(app_with("200 OK", [("Content-Length", "4"), ("Keep-Alive", "timeout=5"),
                                       ("Connection", "keep-alive"), ("X-Kept", "1")]))
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2 + CLOSE_GET)
            raw = read_until_close(sock)
    responses = parse_responses(raw)
    assert [s for s, _, _ in responses] == [200, 200, 200]  # keep-alive kept: nothing closed early
    assert b"Keep-Alive" not in raw and b"keep-alive" not in raw and raw.count(b"X-Kept: 1") == 3
    warned = [r.getMessage() for r in caplog.records if "hop-by-hop" in r.getMessage()]
    assert len([w for w in warned if "'Keep-Alive'" in w]) <= 1
    assert len([w for w in warned if "'Connection'" in w]) <= 1
    # Transfer-Encoding would corrupt the framing: still refused
    raw = raw_exchange(serve(app_with("200 OK", [("Transfer-Encoding", "chunked")])).port, CLOSE_GET)
    assert raw.startswith(b"HTTP/1.1 500 ")


# -- request side (items 5, 6, 7, 9) -------------------------------------------------------

def environ_app(environ: dict, start_response: Any) -> list[bytes]:
    import json

    keys = ("HTTP_HOST", "HTTP_AUTHORIZATION", "HTTP_X_FORWARDED_FOR", "CONTENT_TYPE", "HTTP_X_PAD",
            "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "wsgiplus.trailers")
    body = json.dumps({k: environ.get(k) for k in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def environ_of(raw: bytes) -> dict:
    import json

    assert raw.startswith(b"HTTP/1.1 200 "), raw[:100]
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def test_trailers_are_never_merged_into_the_environ(serve: Any) -> None:
    server = serve(environ_app)
    raw = raw_exchange(server.port, b"GET /basic-auth/u/p HTTP/1.1\r\nHost: real.example\r\n"
                       b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       b"0\r\nAuthorization: Basic dTpw\r\nHost: evil.example\r\nX-Forwarded-For: 6.6.6.6\r\n"
                       b"Content-Type: evil/type\r\nX-Checksum: abc\r\n\r\n")
    env = environ_of(raw)
    assert env["HTTP_AUTHORIZATION"] is None and env["HTTP_X_FORWARDED_FOR"] is None
    assert env["HTTP_HOST"] == "real.example" and env["CONTENT_TYPE"] == "text/plain"
    assert env["wsgiplus.trailers"] == [["X-Checksum", "abc"]]  # forbidden fields left out


def test_field_values_are_trimmed(serve: Any) -> None:
    server = serve(environ_app)
    env = environ_of(raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: \t h.example \t\r\n"
                                               b"X-Pad:   v  a \t \r\nConnection: close\r\n\r\n"))
    assert (env["HTTP_HOST"], env["HTTP_X_PAD"]) == ("h.example", "v  a")


@pytest.mark.parametrize("line", [b"GET / RTSP/1.0", b"OPTIONS * RTSP/1.0", b"SOURCE / ICE/1.0",
                                  b"DESCRIBE / RTSP/1.0"])
def test_protocols_other_than_http_are_refused(serve: Any, line: bytes) -> None:
    server = serve(environ_app)
    raw = raw_exchange(server.port, line + b"\r\nHost: h\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    # and behind a valid request with the same target, pipelined
    raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + line + b"\r\nHost: h\r\n\r\n")
    assert [s for s, _, _ in parse_responses(raw)][-1] == 400


def test_absolute_form_target_sets_the_host(serve: Any) -> None:
    server = serve(environ_app)
    env = environ_of(raw_exchange(server.port, b"GET http://target.example:81/p/q?x=1 HTTP/1.1\r\n"
                                               b"Host: header.example\r\nConnection: close\r\n\r\n"))
    assert (env["HTTP_HOST"], env["PATH_INFO"], env["QUERY_STRING"]) == ("target.example:81", "/p/q", "x=1")
    env = environ_of(raw_exchange(server.port, b"GET http://[::1]/ HTTP/1.1\r\nHost: other\r\n"
                                               b"Connection: close\r\n\r\n"))
    assert env["HTTP_HOST"] == "[::1]"


# -- item 10: finished bodies freed without the cyclic GC; one budget for buffered memory ----

def test_a_finished_request_frees_its_body_without_the_cyclic_gc(serve: Any) -> None:
    import gc
    import weakref

    refs: list[Any] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"]
        refs.append(weakref.ref(body))
        data = body.read()
        environ["wsgi.early_hints"]  # the environ holds the server's callables, as apps see them
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    server = serve(app)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            raw = raw_exchange(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                                            b"Connection: close\r\n\r\n" + b"x" * 100000)
            assert raw.endswith(b"x" * 1000)
        from conftest import wait_for
        assert wait_for(lambda: all(r() is None for r in refs), timeout=10), "a body outlived its request"
        assert wait_for(lambda: server.server.budget.used == 0, timeout=10)
    finally:
        gc.enable()


def test_buffered_bodies_past_the_budget_go_to_temp_files(serve: Any, caplog: Any) -> None:
    from conftest import wait_for

    def app(environ: dict, start_response: Any) -> list[bytes]:
        kind = type(environ["wsgi.input"]).__name__
        size = len(environ["wsgi.input"].read())
        body = f"{kind} {size}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = serve(app, max_buffered_size=100_000)
    head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 90000\r\nConnection: close\r\n\r\n"
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as first:
        first.sendall(head + b"a" * 80_000)  # held in memory, waiting for the rest
        assert wait_for(lambda: server.server.budget.used >= 80_000, timeout=10)
        second = raw_exchange(server.port, head + b"b" * 90_000)
        assert second.endswith(b"\r\n\r\nBufferedRandom 90000") or b"90000" in second
        assert b"BytesIO" not in second  # spooled: past the budget
        assert "at its budget" in caplog.text
        first.sendall(b"a" * 10_000)
        assert read_until_close(first).endswith(b"BytesIO 90000")  # the first stayed in memory
    assert wait_for(lambda: server.server.budget.used == 0, timeout=10)


def test_incomplete_heads_past_the_budget_get_503(serve: Any, caplog: Any) -> None:
    from conftest import wait_for

    server = serve(environ_app, max_buffered_size=50_000, max_header_size=8190)
    fields = b"".join(b"X-Pad-%d: %b\r\n" % (i, b"p" * 4000) for i in range(10))  # ~40 KB
    with caplog.at_level(logging.WARNING, logger="wsgiplus.error"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as first:
        first.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n" + fields)  # a head not finished yet
        assert wait_for(lambda: server.server.budget.used >= 40_000, timeout=10)
        raw = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + fields)
        assert raw.startswith(b"HTTP/1.1 503 "), raw[:80]
        assert "at its budget" in caplog.text
        first.sendall(b"Connection: close\r\n\r\n")
        assert read_until_close(first).startswith(b"HTTP/1.1 200 ")
    # a connection that leaves with half a head gives its bytes back
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as third:
        third.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n" + fields)
        assert wait_for(lambda: server.server.budget.used >= 40_000, timeout=10)
    assert wait_for(lambda: server.server.budget.used == 0, timeout=10)


# -- item 11: a trickled body is cut by its total deadline -----------------------------------

def test_a_trickled_body_is_cut_by_the_minimum_rate(serve: Any, caplog: Any) -> None:
    calls: list[int] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        calls.append(1)
        start_response("200 OK", [])
        return [b"late"]

    # each gap (0.2 s) is well inside body_timeout, so only the total deadline
    # (body_timeout + received / body_min_rate, about 3 s here) can cut it
    server = serve(app, body_timeout=3.0, body_min_rate=1000)
    with caplog.at_level(logging.INFO, logger="wsgiplus.error"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        answer = b""
        sock.settimeout(0.2)
        for _ in range(150):  # 30 s at most; the 1000 bytes would take 200 s
            try:
                sock.sendall(b"x")
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert calls == [] and "request body timeout" in caplog.text


# -- item 13 and issue 14: one proxy-header family, believed by default from loopback --------

def proxy_app(environ: dict, start_response: Any) -> list[bytes]:
    body = f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']} {environ.get('HTTP_HOST')}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


# what nginx with the documented config sends: its own X-Forwarded-*, and the client's own Forwarded
THROUGH_NGINX = (b"GET / HTTP/1.1\r\nHost: shop.example\r\nForwarded: for=6.6.6.6;proto=https;host=evil\r\n"
                 b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n")


def test_a_clients_forwarded_header_does_not_beat_nginxs_x_forwarded(serve: Any) -> None:
    server = serve(proxy_app, proxy_headers=True, forwarded_allow_ips=["127.0.0.1"])
    raw = raw_exchange(server.port, THROUGH_NGINX)
    assert raw.endswith(b"\r\n\r\n203.0.113.9 http shop.example"), raw[-80:]
    # the other family, when that is what the proxy sets
    server = serve(proxy_app, forwarded_allow_ips=["127.0.0.1"], forwarded_headers="forwarded")
    raw = raw_exchange(server.port, THROUGH_NGINX)
    assert raw.endswith(b"\r\n\r\n6.6.6.6 https evil"), raw[-80:]


def test_proxy_headers_are_believed_by_default_from_loopback_through_the_cli(tmp_path: Any) -> None:
    from conftest import cli_server

    (tmp_path / "proxyapp.py").write_text(
        "def app(environ, start_response):\n"
        "    body = (environ['REMOTE_ADDR'] + ' ' + environ['wsgi.url_scheme']).encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    request = (b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n"
               b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
    with cli_server(["proxyapp:app"], cwd=tmp_path) as server:
        assert raw_exchange(server.port, request).endswith(b"\r\n\r\n203.0.113.9 https")
    with cli_server(["proxyapp:app", "--no-proxy-headers"], cwd=tmp_path) as server:
        assert raw_exchange(server.port, request).endswith(b"\r\n\r\n127.0.0.1 http")
    with cli_server(["proxyapp:app", "--forwarded-allow-ips", "10.0.0.0/8"], cwd=tmp_path) as server:
        assert raw_exchange(server.port, request).endswith(b"\r\n\r\n127.0.0.1 http")


# -- item 12: at the fd limit, both loops: back off or carry on, one log line, serve again ----

@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_at_the_fd_limit_one_log_line_and_serving_resumes(tmp_path: Any, loop: str) -> None:
    import resource
    import subprocess
    import sys
    import threading
    import time

    pytest.importorskip(loop)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsgiplus", "wsgiplus.demo:app", "--loop", loop, "--bind", "127.0.0.1:0",
         "--threads", "2", "--no-access-log", "--header-timeout", "60"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    log: list[str] = []
    clients: list[socket.socket] = []
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "".join(log)
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        for _ in range(100):  # more than 64 fds: the server hits EMFILE
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        from conftest import wait_for
        assert wait_for(lambda: any("out of file descriptors" in x for x in log), timeout=15), "".join(log)
        time.sleep(2)  # asyncio used to log a traceback per backlog entry per second here
        assert sum("out of file descriptors" in x for x in log) <= 2  # one per 10 s
        assert not any("Traceback" in x for x in log), "".join(log[:20])
        for c in clients:
            c.close()
        clients.clear()

        def served() -> bool:
            try:
                return raw_exchange(port, CLOSE_GET, timeout=2).startswith(b"HTTP/1.1 200 ")
            except OSError:
                return False

        assert wait_for(served, timeout=15)
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
