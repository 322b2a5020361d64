"""PEP 3333 plumbing: the environ of a request, its input stream, header rules.

The server builds one environ per request from a per-listener template, so
the hot path is a dict copy plus the request's own keys.
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from .protocol import Request

__all__ = ["BodyBuffer", "FileWrapper", "WSGIPLUS_VERSION", "build_environ", "check_headers", "make_environ", "environ_template"]

WSGIPLUS_VERSION = (1, 0)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"^[1-9][0-9]{2} [^\r\n]*$")


def check_status(status: object) -> str:
    if type(status) is not str or not _STATUS.match(status):
        raise ValueError(f"invalid status line {status!r}: want a str like '200 OK'")
    return status


def check_headers(headers: object) -> list[tuple[str, str]]:
    """Refuse what would corrupt the response: CR/LF injection, hop-by-hop fields."""
    if type(headers) is not list:
        raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"response header {item!r} is not a (name, value) tuple")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"response header {item!r} must be two str")
        if not _TOKEN.match(name):
            raise ValueError(f"invalid response header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"invalid character in response header {name!r}")
        lname = name.lower()
        if lname in HOP_BY_HOP:
            raise ValueError(f"hop-by-hop header {name!r} is the server's, not the app's (PEP 3333)")
        if lname == "content-length" and not value.strip().isdigit():
            raise ValueError(f"invalid Content-Length {value!r}")
    return headers


class BodyBuffer:
    """Collects a request body on the event loop; spills to a temp file past a size."""

    __slots__ = ("_file", "_size", "_spool", "_spilled")

    def __init__(self, spool_size: int) -> None:
        self._file: IO[bytes] = io.BytesIO()
        self._size = 0
        self._spool = spool_size
        self._spilled = False

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if not self._spilled and self._size > self._spool:
            spill = tempfile.TemporaryFile(prefix="wsgiplus-body-")
            spill.write(self._file.getvalue())
            self._file = spill
            self._spilled = True
        self._file.write(data)

    @property
    def size(self) -> int:
        return self._size

    def stream(self) -> IO[bytes]:
        """The finished body as a readable file positioned at its start."""
        self._file.seek(0)
        return self._file


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks, close it when done."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        size = self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data


class ErrorStream:
    """``wsgi.errors``: text to the server's stderr, flushed per write."""

    def write(self, text: str) -> int:
        n = sys.stderr.write(text)
        sys.stderr.flush()
        return n

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        sys.stderr.flush()


_ERRORS = ErrorStream()


class EmptyInput:
    """``wsgi.input`` of a request without a body: stateless, so one serves all."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


_EMPTY_INPUT = EmptyInput()

_header_keys: dict[bytes, str | None] = {}


def _environ_key(name: bytes) -> str | None:
    """CGI key for a header name; None drops it (underscores could spoof dashes)."""
    key = _header_keys.get(name)
    if key is None and name not in _header_keys:
        if b"_" in name:
            key = None
        else:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            if key == "HTTP_CONTENT_TYPE":
                key = "CONTENT_TYPE"
            elif key == "HTTP_CONTENT_LENGTH":
                key = "CONTENT_LENGTH"
        if len(_header_keys) < 4096:
            _header_keys[name] = key
    return key


def environ_template(
    server_name: str,
    server_port: str,
    url_scheme: str,
    root_path: str,
    multiprocess: bool,
) -> dict[str, Any]:
    """Keys that are the same for every request on one listener."""
    return {
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": root_path,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": _ERRORS,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
        "wsgiplus.version": WSGIPLUS_VERSION,
    }


def make_environ(
    template: dict[str, Any],
    method: str,
    target: bytes,
    path: bytes,
    query: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    http_version: str,
    body: IO[bytes] | None,
    remote: tuple[str, int] | None,
    chunked: bool = False,
    client_disconnected: Callable[[], bool] | None = None,
    pause_output: Callable[[], Any] | None = None,
    fixer: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The complete PEP 3333 environ of one exchange: the only place its keys are set.

    Protocol-neutral: HTTP/1.1 passes its request line and header fields;
    HTTP/2 passes ``:method`` / ``:path`` split into ``path`` and ``query``,
    the other fields as ``headers`` (``cookie`` fields are joined with ``; ``
    here, as RFC 9113 asks), ``http_version="2"``. ``chunked`` says the body
    came without a Content-Length (it is then set to the received size).
    ``client_disconnected`` and ``pause_output`` are the exchange's callables;
    ``fixer`` (the proxy-header rules) runs last.
    """
    environ = template.copy()
    if b"%" in path:
        path = unquote_to_bytes(path)
    path_info = path.decode("latin-1")
    root = environ["SCRIPT_NAME"]
    if root and (path_info == root or path_info.startswith(root + "/")):
        path_info = path_info[len(root) :]
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = environ["REQUEST_URI"] = target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + http_version
    if remote:
        environ["REMOTE_ADDR"] = remote[0]
        environ["REMOTE_PORT"] = str(remote[1])
    else:
        environ["REMOTE_ADDR"] = ""
    environ["wsgi.input"] = body if body is not None else _EMPTY_INPUT
    for name, value in headers:
        key = _environ_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in environ:
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                continue
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        environ[key] = text
    if chunked:
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        if body is not None:
            environ["CONTENT_LENGTH"] = str(body.seek(0, 2))
            body.seek(0)
    if client_disconnected is not None:
        environ["wsgiplus.client_disconnected"] = client_disconnected
    if pause_output is not None:
        environ["wsgi.pause_output"] = environ["wsgiplus.pause_output"] = pause_output
    if fixer is not None:
        fixer(environ)
    return environ


def build_environ(
    template: dict[str, Any],
    request: Request,
    body: IO[bytes] | None,
    remote: tuple[str, int] | None,
) -> dict[str, Any]:
    """The environ of a parsed HTTP/1.1 ``Request`` (without the exchange's callables)."""
    return make_environ(
        template,
        method=request.method,
        target=request.target,
        path=request.path,
        query=request.query,
        headers=request.headers,
        http_version=request.http_version,
        body=body,
        remote=remote,
        chunked=request.chunked,
    )
