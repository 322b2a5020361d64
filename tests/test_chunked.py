"""Issue 12 item 8: chunked request bodies (RFC 9112 §7.1) decoded by WSGI+ itself, llhttp fed
canonical chunks. Bytes-only tests of the parser, a seeded fuzz against a reference decoder, and
the same shapes over real sockets."""

from __future__ import annotations

import random
import re
import socket
from typing import Any

import pytest
from conftest import raw_exchange, read_until_close
from test_http import parse_responses

from wsgiplus.protocols.http11 import (
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    Request,
    RequestParser,
)

HEAD = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def parse(data: bytes, pieces: list[int] | None = None, limits: Limits | None = None) -> list:
    """Feed ``data`` (cut at ``pieces`` offsets, if given) to one parser; all the events."""
    parser = RequestParser(limits)
    cuts = [0, *(pieces or []), len(data)]
    events: list = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        if b > a:
            events += parser.feed(data[a:b])
    return events


def body_of(events: list) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def refused(data: bytes, limits: Limits | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(data, limits=limits)
    return info.value


VALID = [
    (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3;a\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3;a=b\r\nabc\r\n0;last\r\n\r\n", b"abc"),
    (b"3;a=b;c;d=e\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3 ;a=b\r\nabc\r\n0\r\n\r\n", b"abc"),  # BWS before ;
    (b"3; a=b\r\nabc\r\n0\r\n\r\n", b"abc"),  # BWS after ;
    (b"3;a =b\r\nabc\r\n0\r\n\r\n", b"abc"),  # BWS before =
    (b"3;a= b\r\nabc\r\n0\r\n\r\n", b"abc"),  # BWS after =
    (b"3 \t; \ta \t= \tb \t;\tc\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b'3;a="quoted value"\r\nabc\r\n0\r\n\r\n', b"abc"),
    (b'3;a=""\r\nabc\r\n0\r\n\r\n', b"abc"),  # an empty quoted-string is a value
    (b'3;a="x\\"y\\\\z\\\t"\r\nabc\r\n0\r\n\r\n', b"abc"),  # quoted-pairs: \" \\ \HTAB
    (b'3;a="semi;colon=in,quotes"\r\nabc\r\n0\r\n\r\n', b"abc"),
    (b'3;a="obs\xe9text"\r\nabc\r\n0\r\n\r\n', b"abc"),
    (b"3;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nabc\r\n0\r\n\r\n", b"abc"),  # every tchar
    (b"000003\r\nabc\r\n0000\r\n\r\n", b"abc"),  # leading zeros
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),  # uppercase hex
    (b"1a\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n", b"z" * 26),
    (b"1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n", b"z" * 26),
    (b"0\r\n\r\n", b""),
    (b"3\r\na\r\n\r\n0\r\n\r\n", b"a\r\n"),  # CRLF inside the data is data
    (b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n", b"abc"),  # trailer section
]


@pytest.mark.parametrize(("chunks", "body"), VALID)
def test_valid_chunked_shapes(chunks: bytes, body: bytes) -> None:
    data = HEAD + chunks + NEXT
    events = parse(data)
    kinds = [type(e) for e in events]
    assert kinds[0] is Request and kinds[-2:] == [Request, EndOfMessage] and kinds.count(EndOfMessage) == 2
    assert body_of(events) == body
    assert events[-2].path == b"/next"  # the pipelined request behind it is framed right
    # the same bytes one at a time: the same events
    one_by_one = parse(data, list(range(1, len(data))))
    assert body_of(one_by_one) == body and [type(e) for e in one_by_one if not isinstance(e, Data)] == \
        [Request, EndOfMessage, Request, EndOfMessage]


def test_trailers_are_kept_apart_from_the_head() -> None:
    events = parse(HEAD + b"3;x=1\r\nabc\r\n0;y\r\nX-Checksum: 1\r\n\r\n")
    assert events[0].trailers == [(b"X-Checksum", b"1")]


INVALID = [
    (b"20;=\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "empty name and value"),
    (b"20;invalid=\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "empty value"),
    (b"20;=v\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "empty name"),
    (b"20;\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "no name"),
    (b"20;;a\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "empty extension"),
    (b"20;a=b=c\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "two ="),
    (b"20;a b\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "space inside a name"),
    (b"20;a=b c\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "space inside a token value"),
    (b"20;a=b \r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "BWS before CRLF"),
    (b"20 \r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "BWS after the size, no extension"),
    (b" 20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "space before the size"),
    (b'20;a="open\r\n' + b"x" * 32 + b"\r\n0\r\n\r\n", "unterminated quoted-string"),
    (b'20;a="x"y\r\n' + b"x" * 32 + b"\r\n0\r\n\r\n", "text after a quoted-string"),
    (b'20;a="x\\\x7f"\r\n' + b"x" * 32 + b"\r\n0\r\n\r\n", "quoted-pair of DEL"),
    (b'20;a="x\x00"\r\n' + b"x" * 32 + b"\r\n0\r\n\r\n", "NUL in a quoted-string"),
    (b"20;a\x00\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "NUL in a name"),
    (b"20;a,b\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "comma in a name"),
    (b"20;a\rb\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "bare CR"),
    (b"20\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "bare LF after the size"),
    (b"20\r\n" + b"x" * 32 + b"\n0\r\n\r\n", "bare LF after the data"),
    (b"20\r\n" + b"x" * 32 + b"0\r\n\r\n", "no CRLF after the data"),
    (b"20\r\n" + b"x" * 33 + b"\r\n0\r\n\r\n", "data longer than its size"),
    (b"20\r\n" + b"x" * 32 + b"\r\ngarbage\r\n", "garbage where a size belongs"),
    (b"0x20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "0x prefix"),
    (b"-20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "sign"),
    (b"+20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "sign"),
    (b";a\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n", "no size"),
    (b"\r\n0\r\n\r\n", "empty size line"),
    (b"2g\r\nab\r\n0\r\n\r\n", "non-hex digit"),
    (b"\xd9\xa4\r\nab\r\n0\r\n\r\n", "a non-ASCII digit"),
    (b"0\r\nX: y\n\r\n", "bare LF in the trailer section"),
    (b"0\r\n\n", "bare LF ending the trailer section"),
    (b"0\r\nBad Name: y\r\n\r\n", "invalid trailer field"),
    (b"0\r\nX: a\r\n folded\r\n\r\n", "obs-fold in a trailer"),
]


@pytest.mark.parametrize(("chunks", "why"), INVALID)
def test_invalid_chunked_shapes_are_a_400(chunks: bytes, why: str) -> None:
    error = refused(HEAD + chunks + NEXT)
    assert error.status == 400, why
    assert not any(isinstance(e, Request) and e.path == b"/next" for e in error.events), why


def test_invalid_extension_is_refused_as_soon_as_its_line_ends() -> None:
    parser = RequestParser()
    parser.feed(HEAD)
    assert parser.feed(b"20;invalid") == []  # not yet known
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"=\r\n")  # no data has come: answered at once, no wait for a body timeout
    assert info.value.status == 400 and parser.finished


def test_size_lines_are_bounded() -> None:
    parser = RequestParser()
    parser.feed(HEAD)
    parser.feed(b"3;" + b"a" * 4000)  # under the bound, held
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"a" * 200)  # an extension that never ends
    assert info.value.status == 400
    assert refused(HEAD + b"0" * 5000 + b"3\r\nabc\r\n0\r\n\r\n").status == 400  # zeros count too
    assert body_of(parse(HEAD + b"0" * 4000 + b"3\r\nabc\r\n0\r\n\r\n")) == b"abc"


@pytest.mark.parametrize("size", [b"b", b"ffffffff", b"ffffffffffffffff", b"ffffffffffffffffff", b"1" + b"0" * 40])
def test_a_size_past_the_limit_is_a_413_before_its_data(size: bytes) -> None:
    parser = RequestParser(Limits(max_body_size=10))
    parser.feed(HEAD)
    with pytest.raises(ProtocolError) as info:
        parser.feed(size + b"\r\n")
    assert info.value.status == 413


def test_the_limit_counts_the_sum_of_the_chunks() -> None:
    limits = Limits(max_body_size=10)
    assert body_of(parse(HEAD + b"5\r\naaaaa\r\n5\r\nbbbbb\r\n0\r\n\r\n", limits=limits)) == b"aaaaabbbbb"
    assert refused(HEAD + b"5\r\naaaaa\r\n6\r\nbbbbbb\r\n0\r\n\r\n", limits).status == 413


def test_trailer_section_is_bounded() -> None:
    limits = Limits(max_request_line=100, max_header_count=2, max_header_size=100)
    parser = RequestParser(limits)
    parser.feed(HEAD + b"0\r\nX: ")
    with pytest.raises(ProtocolError) as info:
        for _ in range(100):
            parser.feed(b"y" * 100)  # a trailer field that never ends
    assert info.value.status == 431


@pytest.mark.parametrize("ows", [b" ", b"\t", b" \t ", b"\t\t"])
def test_transfer_encoding_chunked_followed_by_ows(ows: bytes) -> None:
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked" + ows + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + NEXT
    for pieces in ([], list(range(1, len(data)))):  # whole, and one byte at a time (an HTAB then CR later)
        events = parse(data, pieces)
        assert events[0].chunked and body_of(events) == b"abc" and events[-2].path == b"/next"
        assert (b"Transfer-Encoding", b"chunked") in events[0].headers


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\t, gzip\r\n\r\n0\r\n\r\n",  # chunked not last
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\tx\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\t\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\t\r\nHost: h\r\n\r\n",  # the request line is no field
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\t\r\n\r\n",  # still obs-fold
])
def test_htab_rewrite_accepts_nothing_else(data: bytes) -> None:
    assert refused(data).status == 400


def test_htab_inside_a_value_is_kept() -> None:
    events = parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb\t\r\nX-B: \tc\t \r\n\r\n")
    assert (b"X-A", b"a\tb") in events[0].headers and (b"X-B", b"c") in events[0].headers


@pytest.mark.parametrize("data", [
    HEAD.replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n") + b"0\r\n\r\n",  # CL + TE
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + NEXT,
    HEAD + b"5\r\nabc\r\n0\r\n\r\n" + NEXT,  # data shorter than its size: NEXT is data, then garbage
    HEAD + b"3\r\nabc\r\n0\r\n" + NEXT,  # no end of the trailer section: NEXT is a bad trailer
])
def test_smuggling_shapes_never_surface_the_next_request(data: bytes) -> None:
    try:
        events = parse(data)
    except ProtocolError as exc:
        assert exc.status == 400
        events = exc.events
    assert not any(isinstance(e, Request) and e.path == b"/next" for e in events)


# -- seeded fuzz: random valid chunked bodies, split at random points -----------------------

def reference_dechunk(data: bytes) -> tuple[bytes, bytes]:
    """A plain reading of RFC 9112 §7.1 for valid input: (body, what follows the message)."""
    body = b""
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        line = data[pos:eol]
        size = int(re.match(rb"[0-9a-fA-F]+", line).group(0), 16)  # type: ignore[union-attr]
        pos = eol + 2
        if size == 0:
            break
        body += data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n"
        pos += size + 2
    while not data.startswith(b"\r\n", pos):  # trailer fields
        pos = data.index(b"\r\n", pos) + 2
    return body, data[pos + 2 :]


def random_ext(rng: random.Random) -> bytes:
    def bws() -> bytes:
        return bytes(rng.choice(b" \t") for _ in range(rng.choice([0, 0, 0, 1, 2])))

    tchars = b"!#$%&'*+-.^_`|~abcxyzABC019"
    out = b""
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        name = bytes(rng.choice(tchars) for _ in range(rng.randint(1, 8)))
        out += bws() + b";" + bws() + name
        kind = rng.random()
        if kind < 0.3:
            continue
        if kind < 0.6:
            value = bytes(rng.choice(tchars) for _ in range(rng.randint(1, 8)))
        else:
            parts = [rng.choice([b"a", b" ", b"\t", b";", b"=", b",", b"\\\"", b"\\\\", b"\\a", b"\xff"])
                     for _ in range(rng.randint(0, 6))]
            value = b'"' + b"".join(parts) + b'"'
        out += bws() + b"=" + bws() + value
    return out


def test_fuzz_random_valid_chunked_bodies_split_anywhere() -> None:
    rng = random.Random(20261201)
    for _ in range(400):
        chunks = [bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 5, 16, 100, 1000])))
                  for _ in range(rng.randint(0, 6))]
        stream = b""
        for chunk in chunks:
            digits = b"%x" % len(chunk) if rng.random() < 0.5 else b"%X" % len(chunk)
            stream += b"0" * rng.choice([0, 0, 2]) + digits + random_ext(rng) + b"\r\n" + chunk + b"\r\n"
        stream += b"0" * rng.choice([1, 1, 3]) + random_ext(rng) + b"\r\n"
        for n in range(rng.choice([0, 0, 1, 2])):
            stream += b"X-T%d: v%d\r\n" % (n, n)
        stream += b"\r\n"
        ref_body, rest = reference_dechunk(stream + NEXT)
        assert ref_body == b"".join(chunks) and rest == NEXT
        data = HEAD + stream + NEXT
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12))))
        events = parse(data, cuts)
        assert body_of(events) == ref_body, stream[:200]
        assert [type(e) for e in events if not isinstance(e, Data)] == [Request, EndOfMessage, Request,
                                                                        EndOfMessage]


def test_fuzz_mutated_chunked_bodies_never_smuggle() -> None:
    """Seeded: mutations of a chunked request; events or a 4xx, and never a request not in the bytes."""
    rng = random.Random(8)
    seed = HEAD + b"5;a=b\r\nhello\r\n3 ; q=\"x;y\"\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    alphabet = b"\r\n \t;=\"\\0123456789abcdefABCDEFxyz:"
    for _ in range(3000):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(HEAD), len(data) + 1)
            action = rng.random()
            if action < 0.4 and pos < len(data):
                del data[pos : pos + rng.randint(1, 3)]
            elif action < 0.8:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
            elif pos < len(data):
                data[pos] = rng.choice(alphabet)
        data += NEXT
        cut = rng.randrange(1, len(data))
        parser = RequestParser(Limits(max_body_size=100_000))
        events: list = []
        try:
            events += parser.feed(bytes(data[:cut]))
            events += parser.feed(bytes(data[cut:]))
        except ProtocolError as exc:
            assert 400 <= exc.status < 500
            events += exc.events
        for event in events:
            assert isinstance(event, (Request, Data, EndOfMessage))
        if any(isinstance(e, Request) and e.path == b"/next" for e in events):
            # the next request surfaced only if the chunked message before it is one the reference reads
            body, rest = reference_dechunk(bytes(data[len(HEAD):]))
            assert rest.lstrip(b"\r\n") == NEXT and body_of(events) == body  # empty lines may precede a request


# -- over real sockets ----------------------------------------------------------------------

def echo_app(environ: dict, start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.mark.parametrize("chunks", [b"20;=\r\n", b"20;invalid=\r\n", b"20;a=b \r\n"])
def test_invalid_extension_is_a_400_at_once_over_a_socket(serve: Any, chunks: bytes) -> None:
    # body_timeout 60 s: a 408 could only come after it, far past this read's 10 s
    server = serve(echo_app, body_timeout=60.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(HEAD + chunks)  # the data never comes: only the size line decides
        raw = read_until_close(sock, 10)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert b"Connection: close" in raw


@pytest.mark.parametrize(("te", "chunks"), [
    (b"chunked", b"3 ;a=b\r\nabc\r\n4; q=\"x\\\"y\"\r\ndefg\r\n0 \t;\tlast\r\n\r\n"),
    (b"chunked\t", b"7\r\nabcdefg\r\n0\r\n\r\n"),
    (b"chunked \t", b"3;a =\tb\r\nabc\r\n4\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n"),
])
def test_valid_bws_shapes_are_answered_over_a_socket(serve: Any, te: bytes, chunks: bytes) -> None:
    server = serve(echo_app)
    raw = raw_exchange(server.port, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + te + b"\r\n\r\n"
                       + chunks + b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    responses = parse_responses(raw)
    assert [(s, b) for s, _, b in responses] == [(200, b"abcdefg"), (200, b"ok")]


def test_a_chunked_upload_in_many_pieces_over_a_socket(serve: Any) -> None:
    rng = random.Random(5)
    body = bytes(rng.randrange(256) for _ in range(300_000))
    stream = b""
    pos = 0
    while pos < len(body):
        n = min(rng.randint(1, 20_000), len(body) - pos)
        stream += b"%x;n=%d\r\n" % (n, pos) + body[pos : pos + n] + b"\r\n"
        pos += n
    stream += b"0\r\n\r\n"
    server = serve(echo_app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for at in range(0, len(stream), 7_777):  # cuts that fall anywhere in the framing
            sock.sendall(stream[at : at + 7_777])
        raw = read_until_close(sock, 10)
    [(status, _, got)] = parse_responses(raw)
    assert status == 200 and got == body


@pytest.mark.parametrize(("te_lines", "status"), [
    (b"Transfer-Encoding: gzip, chunked\r\n", 501),
    (b"Transfer-Encoding: deflate,chunked\r\n", 501),
    (b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501),  # two fields are one list
    (b"Transfer-Encoding: chunked, chunked\r\n", 400),
])
def test_a_transfer_coding_the_server_does_not_decode_is_refused(te_lines: bytes, status: int) -> None:
    """RFC 9112 6.1: never hand the app a body still in a coding it was not told about."""
    head = b"POST /up HTTP/1.1\r\nHost: h\r\n" + te_lines + b"\r\n"
    error = refused(head + b"3\r\nabc\r\n0\r\n\r\n" + NEXT)
    assert error.status == status
    assert not any(isinstance(e, Request) for e in error.events)


def test_gzip_chunked_is_a_501_over_a_socket(serve: Any) -> None:
    server = serve(echo_app)
    raw = raw_exchange(server.port, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       b"3\r\nabc\r\n0\r\n\r\n" + NEXT)
    assert raw.startswith(b"HTTP/1.1 501 "), raw[:80]
    assert b"Connection: close" in raw and b"/next" not in raw
