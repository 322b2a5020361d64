"""PEP 3333 plumbing: the environ of a request, its input stream, header rules.

The server builds one environ per request from a per-listener template, so
the hot path is a dict copy plus the request's own keys.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, cast
from urllib.parse import unquote_to_bytes

from ..protocols.http11 import MemoryBudget, Request

__all__ = ["BodyBuffer", "FileWrapper", "WSGIPLUS_VERSION", "build_environ", "check_headers", "body_time_left",
           "early_hints_head", "environ_template", "make_environ"]

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

# Every check is a full match: ``$`` also matches before a final "\n", which
# would let a bare LF through into the head (response splitting).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value (RFC 9110 5.5): VCHAR, obs-text, SP, HTAB; nothing else, nothing past latin-1
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# status-code SP reason-phrase (RFC 9112 4); 1xx is not a final response
_STATUS = re.compile(r"[2-9][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(r"[0-9]+")

log = logging.getLogger("wsgiplus.error")

# hop-by-hop names already warned about (one warning per distinct name, bounded)
_warned_hop: set[str] = set()


def check_status(status: object) -> str:
    """The app's status line, or ValueError: 3 digits (not 1xx), a space, a clean reason."""
    if type(status) is not str or not _STATUS.fullmatch(status):
        if type(status) is str and status[:1] == "1" and _STATUS.fullmatch("2" + status[1:]):
            raise ValueError(
                f"informational status {status!r} from start_response: a 1xx is not a final "
                "response (use environ['wsgi.early_hints'] for 103 Early Hints)"
            )
        raise ValueError(f"invalid status line {status!r}: want a str like '200 OK'")
    return status


def _drop_hop_by_hop(name: str) -> None:
    lname = name.lower()
    if lname not in _warned_hop and len(_warned_hop) < 64:
        _warned_hop.add(lname)
        log.warning("the app sent hop-by-hop header %r: dropped (the server frames the "
                    "connection; this warning is logged once per header name)", name)


def check_headers(headers: object) -> list[tuple[str, str]]:
    """Validate the app's response headers; return the list to send.

    Refused (ValueError/TypeError, so a 500): what would corrupt the response -
    names that are not tokens, values with CR/LF/NUL/controls or past latin-1,
    ``Transfer-Encoding`` (the server frames the body), a malformed or
    conflicting ``Content-Length``. ``Connection: close`` is kept (the server
    closes after this response); other hop-by-hop fields are dropped with one
    warning per name; repeated identical Content-Lengths are sent once.
    """
    if type(headers) is not list:
        raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
    out = headers
    content_length: str | None = None
    for index, item in enumerate(headers):
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"response header {item!r} is not a (name, value) tuple")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"response header {item!r} must be two str")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid response header name {name!r}")
        if not _VALUE.fullmatch(value):
            raise ValueError(f"invalid character in response header {name!r}: {value!r}")
        lname = name.lower()
        keep = True
        if lname in HOP_BY_HOP:
            if lname == "transfer-encoding":
                raise ValueError(f"hop-by-hop header {name!r} is the server's, not the app's (PEP 3333)")
            if lname == "connection" and "close" in (t.strip().lower() for t in value.split(",")):
                item = ("Connection", "close")
            else:
                _drop_hop_by_hop(name)
                keep = False
        elif lname == "content-length":
            value = value.strip(" \t")
            if not _DIGITS.fullmatch(value):
                raise ValueError(f"invalid Content-Length {item[1]!r}")
            value = str(int(value))  # no leading zeros: one spelling to compare
            if content_length is not None:
                if value != content_length:
                    raise ValueError(f"two different Content-Lengths: {content_length!r} and {value!r}")
                keep = False  # the same value again: send it once
            content_length = value
            if value != item[1]:
                item = (name, value)
        if out is headers and (not keep or item != headers[index]):
            out = headers[:index]
        if out is not headers and keep:
            out.append(item)
    return out


def early_hints_head(headers: object) -> bytes:
    """A ``103 Early Hints`` response head for ``wsgi.early_hints(headers)`` (checked as a final head's)."""
    fields = check_headers(headers)
    lines = ["HTTP/1.1 103 Early Hints\r\n"]
    for name, value in fields:
        if name.lower() not in ("connection", "content-length"):
            lines += (name, ": ", value, "\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class BodyBuffer:
    """Collects a request body on the event loop; spills to a temp file past a size.

    The bytes kept in memory are charged to the server's ``MemoryBudget``; when
    the budget is spent the body goes to a temp file at once (one log line per
    10 s). They are returned when the buffer is freed (by reference counting:
    the environ and the runner hold no cycle) or spilled.
    """

    __slots__ = ("_file", "_size", "_spool", "_spilled", "_budget", "_charged", "started", "counted")

    def __init__(self, spool_size: int, budget: MemoryBudget | None = None) -> None:
        self._file: IO[bytes] = io.BytesIO()
        self._size = 0
        self._spool = spool_size
        self._spilled = False
        self._budget = budget
        self._charged = 0
        self.started = time.monotonic()  # for the body's total deadline (body_min_rate) ...
        self.counted = 0  # ... which counts the bytes received since then

    def restart_clock(self) -> None:
        """Start the total deadline again from now (the body waited behind other requests)."""
        self.started = time.monotonic()
        self.counted = self._size

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if not self._spilled:
            budget = self._budget
            if self._size > self._spool:
                self._spill()
            elif budget is not None:
                if budget.take(len(data)):
                    self._charged += len(data)
                else:
                    budget.refuse("request bodies go to temp files")
                    self._spill()
        self._file.write(data)

    def _spill(self) -> None:
        spill = tempfile.TemporaryFile(prefix="wsgiplus-body-")
        spill.write(cast(io.BytesIO, self._file).getvalue())
        self._file = spill
        self._spilled = True
        self._release()

    def _release(self) -> None:
        if self._charged:
            self._budget.give(self._charged)  # type: ignore[union-attr]
            self._charged = 0

    def __del__(self) -> None:
        self._release()

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_memory(self) -> bool:
        return not self._spilled

    def stream(self) -> IO[bytes]:
        """The finished body as a readable file positioned at its start."""
        self._file.seek(0)
        return self._file


def body_time_left(body: Any, timeout: float, min_rate: float | None) -> float:
    """Seconds the body may still take: ``timeout`` between pieces, and in total
    ``timeout + bytes received / min_rate`` from its start (so a trickle is cut)."""
    if not min_rate or not timeout:
        return timeout
    total = body.started + timeout + (body.size - body.counted) / min_rate - time.monotonic()
    return max(0.001, min(timeout, total))


# the block a regular file is copied in when it cannot be sent with sendfile (TLS,
# HTTP/2, --no-sendfile): the outbox's high-water mark, whatever block the app asked for
# (werkzeug asks for 8 KiB: one loop wake-up per 8 KiB was the cost)
FILE_BLOCK = 256 * 1024


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks, close it when done.

    Over a regular file on plain TCP the server sends it with ``os.sendfile``
    (``Runner._offer_file``) and does not iterate; elsewhere a regular file is
    read in blocks of at least ``FILE_BLOCK`` bytes, any other file-like in
    ``blksize`` blocks (a pipe's reader must not wait for 256 KiB).
    """

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        size = self.blksize
        if size < FILE_BLOCK:
            try:
                if stat.S_ISREG(os.fstat(self.filelike.fileno()).st_mode):
                    size = FILE_BLOCK
            except (AttributeError, OSError, ValueError):
                pass
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

# fields a trailer section must not carry (RFC 9110 6.5.1): framing, routing,
# request modifiers, authentication, and how to process the content
FORBIDDEN_TRAILERS = frozenset(
    name.encode()
    for name in (
        "transfer-encoding content-length host authorization proxy-authorization cookie "
        "expect max-forwards pragma range te trailer cache-control if-match if-none-match "
        "if-modified-since if-unmodified-since if-range content-encoding content-type "
        "content-range x-forwarded-for x-forwarded-proto x-forwarded-host x-forwarded-port "
        "forwarded connection keep-alive upgrade"
    ).split()
)

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
    trailers: list[tuple[bytes, bytes]] | None = None,
    client_disconnected: Callable[[], bool] | None = None,
    pause_output: Callable[[], Any] | None = None,
    early_hints: Callable[[list[tuple[str, str]]], None] | None = None,
    fixer: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The complete PEP 3333 environ of one exchange: the only place its keys are set.

    Protocol-neutral: HTTP/1.1 passes its request line and header fields;
    HTTP/2 passes ``:method`` / ``:path`` split into ``path`` and ``query``,
    the other fields as ``headers`` (``cookie`` fields are joined with ``; ``
    here, as RFC 9113 asks), ``http_version="2"``. ``chunked`` says the body
    came without a Content-Length (it is then set to the received size);
    ``trailers`` are the request's trailer fields (``wsgiplus.trailers``, never
    merged into ``HTTP_*``). ``client_disconnected``, ``pause_output`` and
    ``early_hints`` are the exchange's callables; ``fixer`` (the proxy-header
    rules) runs last.
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
    if trailers:  # never merged into HTTP_*: the head's fields were checked, these were not
        environ["wsgiplus.trailers"] = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in trailers
            if name.lower() not in FORBIDDEN_TRAILERS
        ]
    if chunked:
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        if body is not None:
            environ["CONTENT_LENGTH"] = str(body.seek(0, 2))
            body.seek(0)
    if client_disconnected is not None:
        environ["wsgiplus.client_disconnected"] = client_disconnected
    if pause_output is not None:
        environ["wsgi.pause_output"] = environ["wsgiplus.pause_output"] = pause_output
    if early_hints is not None:
        environ["wsgi.early_hints"] = early_hints
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
        trailers=request.trailers,
    )
