"""HTTP behaviours waitress's functional suite (tests/test_functional.py) checks, that WSGI+'s
own tests did not: the same exchanges over real sockets. Where WSGI+ differs on purpose the test
says so (an HTTP/1.1 request without Host is a 400 here, RFC 9112 §3.2)."""

from __future__ import annotations

import socket
import string
from typing import Any

import pytest
from conftest import raw_exchange, read_until_close
from test_http import parse_responses

BODY = string.ascii_letters.encode()


def fixture_app(environ: dict, start_response: Any) -> Any:
    """waitress's fixture apps (badcl, nocl, writecb, error, filewrapper) in one."""
    path = environ["PATH_INFO"]
    if path == "/short_body":  # Content-Length 9, 8 bytes sent
        start_response("200 OK", [("Content-Length", "9")])
        return [b"abcdefgh"]
    if path == "/long_body":  # Content-Length 8, 9 bytes sent
        start_response("200 OK", [("Content-Length", "8")])
        return [b"abcdefghi"]
    if path.startswith("/write_"):
        length = {"/write_short": "9", "/write_long": "9", "/write_equal": "9"}.get(path)
        write = start_response("200 OK", [("Content-Length", length)] if length else [])
        write({"/write_short": b"abcdefgh", "/write_long": b"abcdefghij"}.get(path, b"abcdefghi"))
        return []
    if path == "/generator":
        start_response("200 OK", [])
        return (BODY[i : i + 10] for i in range(0, len(BODY), 10))
    if path == "/list":
        start_response("200 OK", [])
        return [BODY]
    if path == "/list_lentwo":
        start_response("200 OK", [])
        return [BODY[:1], BODY[1:]]
    if path == "/error_before":
        raise ValueError("before start_response")
    if path == "/error_after":
        start_response("200 OK", [])
        raise ValueError("after start_response, before the head is sent")
    if path == "/error_in_generator":
        def gen() -> Any:
            yield b"partial"
            raise ValueError("in the generator, after the head")
        start_response("200 OK", [])
        return gen()
    if path.startswith("/file"):
        import io

        length = {"/file_short": "5", "/file_long": str(len(BODY) + 10), "/file": str(len(BODY))}.get(path)
        start_response("200 OK", [("Content-Length", length)] if length else [])
        return environ["wsgi.file_wrapper"](io.BytesIO(BODY), 8)
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body))), ("X-Content-Length",
                                                                   environ.get("CONTENT_LENGTH", ""))])
    return [body]


def exchange_keepalive(port: int, first: bytes, then: bytes = b"GET / HTTP/1.0\r\n\r\n") -> list:
    """Send ``first``; if the connection stays open, ``then`` on it too; all responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first)
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        try:
            sock.sendall(then)
        except OSError:
            pass
        data += read_until_close(sock, 3)
    head = data.partition(b"\r\n\r\n")[0].lower()
    if b"content-length:" not in head and b"transfer-encoding:" not in head:  # close-delimited
        [(status, headers, _)] = parse_responses(head + b"\r\n\r\n")
        return [(status, headers, data.partition(b"\r\n\r\n")[2])]
    return parse_responses(data)


def test_obs_fold_first_header_line_is_a_400(serve: Any) -> None:
    raw = raw_exchange(serve(fixture_app).port, b"GET / HTTP/1.0\r\n Host: 0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ") and b"Date: " in raw


def test_http11_without_host_is_a_400_on_purpose(serve: Any) -> None:
    raw = raw_exchange(serve(fixture_app).port, b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")  # waitress answers 200; RFC 9112 says 400


def test_body_with_crlf_inside_is_passed_as_is(serve: Any) -> None:
    data = b"Echo\r\nthis\r\nplease"
    raw = raw_exchange(serve(fixture_app).port, b"GET / HTTP/1.0\r\nConnection: close\r\nContent-Length: %d"
                       b"\r\n\r\n%b" % (len(data), data))
    assert raw.endswith(b"\r\n\r\n" + data)


def test_chunked_request_without_content(serve: Any) -> None:
    raw = raw_exchange(serve(fixture_app).port, b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n0\r\n\r\n")
    [(status, headers, body)] = parse_responses(raw)
    assert (status, body, headers["x-content-length"]) == (200, b"", "0")


@pytest.mark.parametrize(("chunks", "why"), [
    (b"20\r\n" + b"x" * 32 + b"\r\ngarbage\r\n", "garbage where a chunk size belongs"),
    (b"0x20\r\n" + b"x" * 32 + b"\r\n", "invalid hex"),
    (b"20\r\n" + b"x" * 32 + b"garbage", "chunk not terminated by CRLF"),
])
def test_broken_chunked_encoding_is_a_400_and_close(serve: Any, chunks: bytes, why: str) -> None:
    raw = raw_exchange(serve(fixture_app).port,
                       b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    assert raw.startswith(b"HTTP/1.1 400 "), why
    assert b"Connection: close" in raw


def test_http10_pipelining_25_requests_in_order(serve: Any) -> None:
    data = b"".join(b"GET / HTTP/1.0\r\nConnection: %b\r\nContent-Length: %d\r\n\r\n%b"
                    % (b"keep-alive" if n < 24 else b"close", len(b"Response #%d\r\n" % n), b"Response #%d\r\n" % n)
                    for n in range(25))
    responses = parse_responses(raw_exchange(serve(fixture_app).port, data))
    assert [b for _, _, b in responses] == [b"Response #%d\r\n" % n for n in range(25)]


KEEP10 = b"GET %b HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(("path", "body", "kept"), [
    (b"/short_body", b"abcdefgh", False),  # short: the connection must close
    (b"/long_body", b"abcdefgh", True),  # cut at its Content-Length; the connection stays
    (b"/write_short", b"abcdefgh", False),
    (b"/write_long", b"abcdefghi", True),
    (b"/write_equal", b"abcdefghi", True),
    (b"/write_nocl", b"abcdefghi", False),  # HTTP/1.0 without a length: close-delimited
    (b"/generator", BODY, False),
    (b"/list", BODY, True),  # a one-element list: its length is known
    (b"/list_lentwo", BODY, False),
    (b"/file", BODY, True),
    (b"/file_short", BODY[:5], True),
    (b"/file_long", BODY, False),
    (b"/file_nocl", BODY, False),
])
def test_http10_keep_alive_and_app_lengths(serve: Any, path: bytes, body: bytes, kept: bool) -> None:
    responses = exchange_keepalive(serve(fixture_app).port, KEEP10 % path)
    assert responses[0][0] == 200 and responses[0][2] == body
    assert len(responses) == (2 if kept else 1), responses
    if kept:
        assert responses[0][1].get("connection", "").lower() == "keep-alive"
    else:
        assert "content-length" not in responses[0][1] or path in (b"/short_body", b"/write_short",
                                                                    b"/file_long")


@pytest.mark.parametrize("path", [b"/generator", b"/list_lentwo", b"/file_nocl"])
def test_http11_unknown_length_is_chunked_and_kept_alive(serve: Any, path: bytes) -> None:
    port = serve(fixture_app).port
    raw = raw_exchange(port, b"GET %b HTTP/1.1\r\nHost: t\r\n\r\nGET /list HTTP/1.1\r\nHost: t\r\n"
                             b"Connection: close\r\n\r\n" % path)
    responses = parse_responses(raw)
    assert [(s, b) for s, _, b in responses] == [(200, BODY), (200, BODY)]
    assert responses[0][1]["transfer-encoding"] == "chunked"


def test_request_body_longer_than_its_content_length_is_the_next_request(serve: Any) -> None:
    port = serve(fixture_app, max_header_size=1000, max_request_line=1000).port
    raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n" + b"a" * 1050)
    responses = parse_responses(raw)
    assert [s for s, _, _ in responses][0] == 200 and responses[0][2] == b"aaaaa"
    assert responses[1][0] in (400, 414, 431)  # the rest is a malformed next request
    raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
                       + b"a" * 1050)
    assert [s for s, _, _ in parse_responses(raw)] == [200]  # closed: the extra bytes are dropped


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize("path", [b"/error_before", b"/error_after"])
def test_app_error_before_the_head_is_a_500_and_close(serve: Any, version: bytes, path: bytes) -> None:
    raw = raw_exchange(serve(fixture_app).port, b"GET %b HTTP/%b\r\nHost: t\r\n\r\n" % (path, version))
    [(status, headers, body)] = parse_responses(raw)
    assert status == 500 and headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    assert b"Traceback" not in body  # tracebacks go to the log, not to the client


def test_app_error_after_the_head_cuts_the_response(serve: Any) -> None:
    raw = raw_exchange(serve(fixture_app).port, b"GET /error_in_generator HTTP/1.1\r\nHost: t\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ") and b"partial" in raw
    assert not raw.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees a broken body


def test_many_clients_at_once(serve: Any) -> None:
    from conftest import get_many

    server = serve(fixture_app)
    assert [s for s, _ in get_many(server.port, ["/list"] * 50)] == [200] * 50
