"""The sans-I/O HTTP layer, tested with bytes alone: no sockets, no threads."""

from __future__ import annotations

import pytest

from wsgiplus.protocols.http11 import (
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    Request,
    RequestParser,
    build_response,
)


def feed(data: bytes, limits: Limits | None = None) -> list:
    return RequestParser(limits).feed(data)


def test_simple_get() -> None:
    events = feed(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n")
    req, end = events
    assert isinstance(req, Request) and isinstance(end, EndOfMessage)
    assert (req.method, req.path, req.query, req.http_version) == ("GET", b"/a%20b", b"x=1", "1.1")
    assert req.keep_alive and not req.has_body
    assert (b"X-A", b"1") in req.headers


def test_body_split_across_feeds() -> None:
    parser = RequestParser()
    events = parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
    assert [type(e) for e in events] == [Request, Data]
    events = parser.feed(b"def")
    assert [type(e) for e in events] == [Data, EndOfMessage]


def test_chunked_body_and_pipelining() -> None:
    events = feed(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    kinds = [type(e) for e in events]
    assert kinds == [Request, Data, Data, EndOfMessage, Request, EndOfMessage]
    assert events[0].chunked and b"".join(e.data for e in events[1:3]) == b"abcde"
    assert events[4].path == b"/next"


def test_http10_keepalive_rules() -> None:
    assert not feed(b"GET / HTTP/1.0\r\n\r\n")[0].keep_alive
    assert feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0].keep_alive
    assert not feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")[0].keep_alive


def test_expect_continue() -> None:
    req = feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")[0]
    assert req.expect_continue


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.9\r\nHost: h\r\n\r\n",
        b"GET /\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        feed(data)
    assert 400 <= info.value.status < 600
    # nothing after the bad bytes is ever turned into a request
    assert not any(isinstance(e, Request) and e.path != b"/" for e in info.value.events)


def test_smuggled_request_never_surfaces() -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    with pytest.raises(ProtocolError) as info:
        feed(data)
    assert info.value.status == 400
    assert not any(isinstance(e, Request) for e in info.value.events)


def test_limits() -> None:
    limits = Limits(max_request_line=100, max_header_count=3, max_header_size=64, max_body_size=10)
    with pytest.raises(ProtocolError) as info:
        feed(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n", limits)
    assert info.value.status == 414
    with pytest.raises(ProtocolError) as info:
        feed(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits)
    assert info.value.status == 431
    with pytest.raises(ProtocolError) as info:
        feed(b"GET / HTTP/1.1\r\nHost: h\r\nA: " + b"x" * 100 + b"\r\n\r\n", limits)
    assert info.value.status == 431
    with pytest.raises(ProtocolError) as info:
        feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", limits)
    assert info.value.status == 413
    with pytest.raises(ProtocolError) as info:
        feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n" + b"x" * 11, limits)
    assert info.value.status == 413


def test_unterminated_header_is_bounded() -> None:
    parser = RequestParser(Limits(max_request_line=100, max_header_count=2, max_header_size=100))
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")
    with pytest.raises(ProtocolError) as info:
        for _ in range(100):
            parser.feed(b"y" * 100)
    assert info.value.status == 431


def test_upgrade_stops_http_parsing() -> None:
    parser = RequestParser()
    events = parser.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    )
    assert events[0].upgrade == b"websocket"
    assert parser.finished and parser.upgraded_data == b"RAW"


def test_response_framing() -> None:
    head, framer = build_response("GET", "1.1", True, "200 OK", [("Content-Type", "text/plain")])
    assert b"Transfer-Encoding: chunked\r\n" in head and head.endswith(b"\r\n\r\n")
    assert framer.body(b"abc") == b"3\r\nabc\r\n" and framer.end() == b"0\r\n\r\n"
    head, framer = build_response("GET", "1.1", True, "200 OK", [("Content-Length", "3")])
    assert framer.body(b"abcdef") == b"abc"  # never more than declared
    assert framer.body(b"x") == b"" and framer.keep_alive
    head, framer = build_response("GET", "1.1", True, "200 OK", [("Content-Length", "5")])
    framer.body(b"ab")
    framer.end()
    assert not framer.keep_alive  # short body: the connection must close
    head, framer = build_response("HEAD", "1.1", True, "200 OK", [])
    assert framer.body(b"abc") == b"" and b"chunked" not in head
    head, framer = build_response("GET", "1.0", True, "200 OK", [])
    assert not framer.keep_alive and b"Connection: close" in head
    head, framer = build_response("GET", "1.1", True, "204 No Content", [])
    assert b"chunked" not in head and b"Content-Length" not in head
    head, framer = build_response("GET", "1.1", True, "200 OK", [], known_length=5)
    assert b"Content-Length: 5\r\n" in head


def test_parser_reuse_only_after_a_keep_alive_message() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser.reusable
    assert isinstance(parser.feed(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")[0], Request)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert parser.idle and not parser.reusable  # llhttp takes no data after a close
    half = RequestParser()
    half.feed(b"GET / HTTP/1.1\r\nHo")
    assert not half.idle and not half.reusable


def test_random_mutations_only_ever_raise_protocol_errors() -> None:
    """Bounded, seeded fuzzing: whatever bytes arrive, the parser answers events or a ProtocolError."""
    import random

    rng = random.Random(20261122)
    seeds = [
        b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ]
    alphabet = b"\r\n :;,/?#%\x00\x7f\xffGETPOSTHTTP/1.0123456789abcdefxyz-"
    for _ in range(3000):
        data = bytearray(rng.choice(seeds) * rng.randint(1, 3))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) + 1)
            action = rng.random()
            if action < 0.4 and data:
                del data[pos : pos + rng.randint(1, 4)]
            elif action < 0.8:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            elif data:
                data[pos % len(data)] = rng.choice(alphabet)
        parser = RequestParser(Limits(max_request_line=200, max_header_count=10, max_header_size=200,
                                      max_body_size=1000))
        cut = rng.randrange(len(data) + 1)
        try:
            for piece in (bytes(data[:cut]), bytes(data[cut:])):
                if piece:
                    for event in parser.feed(piece):
                        assert isinstance(event, (Request, Data, EndOfMessage))
        except ProtocolError as exc:
            assert 400 <= exc.status < 600
