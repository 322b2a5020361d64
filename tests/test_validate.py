"""``wsgiref.validate`` wraps the plain test apps: the server keeps every PEP 3333 rule it checks."""

from __future__ import annotations

import logging
import warnings
from typing import Any
from wsgiref.validate import validator

import httpx
from conftest import hello_app


def streaming_app(environ: dict, start_response: Any) -> Any:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.errors"].write("a line for wsgi.errors\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"got "
    yield body


def lines_app(environ: dict, start_response: Any) -> Any:
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = list(stream)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [first, b"|", b"".join(rest)]


def write_app(environ: dict, start_response: Any) -> Any:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"via write;")
    return [b"via iterable"]


def file_app(environ: dict, start_response: Any) -> Any:
    import io

    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"from a file"), 4)


def test_validator_accepts_the_server(serve: Any, caplog: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the validator reports some problems as warnings
        with caplog.at_level(logging.ERROR, logger="wsgiplus.error"):
            for app, method, path, body, expected in [
                (hello_app, "GET", "/", None, b"Hello, world!"),
                (streaming_app, "POST", "/s?x=1", b"data", b"got data"),
                (lines_app, "POST", "/l", b"one\ntwo\nthree", b"one\n|two\nthree"),
                (write_app, "GET", "/w", None, b"via write;via iterable"),
                (file_app, "GET", "/f", None, b"from a file"),
                (hello_app, "HEAD", "/", None, b""),
            ]:
                server = serve(validator(app))
                r = httpx.request(method, server.url + path, content=body)
                assert (r.status_code, r.content) == (200, expected), (app.__name__, r.text)
    assert caplog.text == ""  # no AssertionError from the validator was logged as an app error
