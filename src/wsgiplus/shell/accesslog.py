"""Access log lines in gunicorn's format language, or as JSON.

Users moving from gunicorn keep their ``access_log_format``: the same atoms
(``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"``, ``%(D)s``,
``%({x-request-id}i)s`` ...) mean the same thing. Atoms are computed only when
the format asks for them, so a short format costs little per request.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

__all__ = ["AccessLogger", "Atoms", "FORMATS", "compile_format", "resolve_format"]

COMMON = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
COMBINED = COMMON + ' "%(f)s" "%(a)s"'
FORMATS = {"common": COMMON, "combined": COMBINED}
DEFAULT_FORMAT = COMBINED  # gunicorn's default


def resolve_format(fmt: str | None) -> str:
    """A preset name (``common``, ``combined``) or a format string; checked now, not per request."""
    fmt = FORMATS.get(fmt or "combined", fmt) or DEFAULT_FORMAT
    try:
        fmt % _Probe()
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"bad access log format {fmt!r}: {exc}") from None
    return fmt


# Formats as ``%s``, ``%d`` or ``%f`` alike. Made with type(): the optional compiled
# build (mypyc, see setup.py) cannot compile a subclass of int.
_AnyAtom = type("_AnyAtom", (int,), {"__str__": lambda self: "-", "__slots__": ()})


class _Probe(Mapping[str, Any]):
    """Accepts any atom name: validates a format string without a request."""

    def __getitem__(self, key: str) -> Any:
        return _AnyAtom(0)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class Atoms(Mapping[str, Any]):
    """The atoms of one finished exchange, computed on first use; unknown atoms are ``-``.

    ``record`` is the exchange's ``wsgiplus.server.streams.ExchangeRecord``.
    """

    def __init__(self, record: Any, now: float | None = None) -> None:
        self.record = record
        self.environ: dict[str, Any] = record.environ
        end = now if now is not None else record.ended_at
        if end is None:
            end = time.monotonic()
        self.duration = max(0.0, end - record.started_at)

    def __iter__(self) -> Iterator[str]:
        return iter(_ATOMS)

    def __len__(self) -> int:
        return len(_ATOMS)

    def __getitem__(self, key: str) -> Any:
        try:
            fn = _ATOMS.get(key)
            value = fn(self) if fn is not None else self._bracketed(key)
        except Exception:  # a log line must never break a request
            value = None
        return "-" if value is None or value == "" else value

    def _bracketed(self, key: str) -> Any:
        """``{name}i`` request header, ``{name}o`` response header, ``{key}e`` environ."""
        if not (key.startswith("{") and len(key) > 3 and key[-2] == "}"):
            return None
        name, kind = key[1:-2], key[-1]
        if kind == "i":
            return request_header(self.environ, name)
        if kind == "o":
            return self.response_header(name)
        if kind == "e":
            return _environ_value(self.environ, name)
        return None

    def request_line(self) -> str:
        rec = self.record
        return f"{rec.method} {rec.target} {rec.protocol}"

    @property
    def method(self) -> str:
        return self.record.method or "-"

    @property
    def status(self) -> str | None:
        status = self.record.status
        return str(status) if status is not None else None

    @property
    def sent(self) -> int:
        return self.record.bytes_sent

    def response_header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in (self.record.response_headers or []) if k.lower() == name]
        return ", ".join(values) if values else None

    def as_json(self) -> dict[str, Any]:
        env = self.environ
        status = self.status
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "remote_addr": env.get("REMOTE_ADDR") or None,
            "user": basic_auth_user(env) or env.get("REMOTE_USER"),
            "method": self.method,
            "path": self.record.target,
            "protocol": self.record.protocol,
            "status": int(status) if status and status.isdigit() else None,
            "bytes": self.sent,
            "duration_ms": round(self.duration * 1000, 3),
            "referer": env.get("HTTP_REFERER"),
            "user_agent": env.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }


_last_time: list[Any] = [0, ""]


def _clf_time() -> str:
    """``[22/Nov/2026:08:00:00 +0000]``, formatted once per second."""
    now = int(time.time())
    if _last_time[0] != now:
        _last_time[:] = [now, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))]
    return _last_time[1]


_ATOMS: dict[str, Callable[[Atoms], Any]] = {
    "h": lambda a: a.environ.get("REMOTE_ADDR"),
    "l": lambda a: "-",
    "u": lambda a: basic_auth_user(a.environ) or a.environ.get("REMOTE_USER"),
    "t": lambda a: _clf_time(),
    "r": Atoms.request_line,
    "s": lambda a: a.status,
    "m": lambda a: a.method,
    "U": lambda a: a.environ.get("PATH_INFO"),
    "q": lambda a: a.environ.get("QUERY_STRING"),
    "H": lambda a: a.record.protocol,
    "b": lambda a: str(a.sent),
    "B": lambda a: a.sent,
    "f": lambda a: a.environ.get("HTTP_REFERER"),
    "a": lambda a: a.environ.get("HTTP_USER_AGENT"),
    "T": lambda a: int(a.duration),
    "D": lambda a: int(a.duration * 1_000_000),
    "M": lambda a: int(a.duration * 1000),
    "L": lambda a: f"{a.duration:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
}


def request_header(environ: Mapping[str, Any], name: str) -> str | None:
    key = name.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return environ.get(key)
    return environ.get("HTTP_" + key)


def _environ_value(environ: Mapping[str, Any], name: str) -> Any:
    if name in environ:
        return environ[name]
    lower = name.lower()
    for key, value in environ.items():
        if key.lower() == lower:
            return value
    return None


def basic_auth_user(environ: Mapping[str, Any]) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def _duration(record: Any) -> float:
    end = record.ended_at
    if end is None:
        end = time.monotonic()
    return max(0.0, end - record.started_at)


# The atoms a text format is compiled to: each takes (record, environ) and
# returns the value, or None / "" for "-". The same meaning as ``_ATOMS``.
_FAST: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "h": lambda r, e: e.get("REMOTE_ADDR"),
    "l": lambda r, e: "-",
    "u": lambda r, e: (basic_auth_user(e) if "HTTP_AUTHORIZATION" in e else None) or e.get("REMOTE_USER"),
    "t": lambda r, e: _clf_time(),
    "r": lambda r, e: f"{r.method} {r.target} {r.protocol}",
    "s": lambda r, e: str(r.status) if r.status is not None else None,
    "m": lambda r, e: r.method or "-",
    "U": lambda r, e: e.get("PATH_INFO"),
    "q": lambda r, e: e.get("QUERY_STRING"),
    "H": lambda r, e: r.protocol,
    "b": lambda r, e: str(r.bytes_sent),
    "B": lambda r, e: r.bytes_sent,
    "f": lambda r, e: e.get("HTTP_REFERER"),
    "a": lambda r, e: e.get("HTTP_USER_AGENT"),
    "T": lambda r, e: int(_duration(r)),
    "D": lambda r, e: int(_duration(r) * 1_000_000),
    "M": lambda r, e: int(_duration(r) * 1000),
    "L": lambda r, e: f"{_duration(r):.6f}",
    "p": lambda r, e: f"<{os.getpid()}>",
}

_ATOM_RE = re.compile(r"%%|%\(([^)]*)\)")


def compile_format(fmt: str) -> Callable[[Any], str]:
    """A function ``record -> line`` for a (checked) gunicorn-style format.

    The named atoms become positional ones, so a line is one tuple and one
    ``%``; each atom costs one small call. Atoms it does not know (``{x}i``,
    ``{x}o``, ``{x}e``, unknown names) go through ``Atoms``, same meaning.
    """
    keys: list[str] = []

    def positional(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return "%%"
        keys.append(m.group(1))
        return "%"

    template = _ATOM_RE.sub(positional, fmt)
    getters = []
    for key in keys:
        fast = _FAST.get(key)
        if fast is None:
            def fast(r: Any, e: dict[str, Any], key: str = key) -> Any:
                return Atoms(r)[key]
        getters.append(fast)

    def line(record: Any) -> str:
        env = record.environ
        values = []
        for get in getters:
            try:
                v = get(record, env)
            except Exception:  # a log line must never break a request
                v = None
            values.append("-" if v is None or v == "" else v)
        return template % tuple(values)

    return line


class _Pending(logging.Handler):
    """Holds an ``AccessLogger``'s batch; its ``flush`` writes it.

    Never attached to a logger: being a ``logging.Handler`` puts it on the list
    ``logging.shutdown()`` flushes (a worker's exit, the interpreter's atexit),
    before the handlers made earlier (the access log's own), so no line is lost
    however the process ends.
    """

    def __init__(self, owner: AccessLogger) -> None:
        super().__init__()
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - never attached
        pass

    def flush(self) -> None:
        self.owner.flush()


class AccessLogger:
    """Writes one line per finished request to the ``wsgiplus.access`` logger.

    Where the lines go (stdout, a file) is the logger's handlers' business;
    ``logconfig.setup_logging`` sets them from the config.

    When the logger has only the handler ``setup_logging`` installed (the
    default, the stdout and file targets), lines are batched: ``log`` formats
    the line and appends it to a list, and the first line of a batch schedules
    one ``flush`` with ``loop.call_soon``, so a loop iteration's lines go out in
    one ``LogRecord`` and one write (WatchedFileHandler's reopen check
    included), in order. A batch is also written when it reaches
    ``BATCH_MAX`` lines, at ``Server.shutdown``, and by ``logging.shutdown()``.
    Any other handler or filter on the logger (a user's ``log_config``, a
    test's list) gets one record per line, at once, as before.
    """

    BATCH_MAX: ClassVar[int] = 256

    def __init__(self, fmt: str | None = None, json_lines: bool = False,
                 logger: logging.Logger | None = None) -> None:
        self.format = resolve_format(fmt)
        self.json = json_lines
        self.logger = logger or logging.getLogger("wsgiplus.access")
        self._line = compile_format(self.format)
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._flusher = _Pending(self)

    @classmethod
    def from_config(cls, config: Any) -> AccessLogger | None:
        """None when the access log is off (``access_log=False``)."""
        if not getattr(config, "access_log", True):
            return None
        return cls(config.access_log_format, bool(getattr(config, "log_json", False)))

    def line(self, record: Any) -> str:
        if self.json:
            return json.dumps(Atoms(record).as_json(), separators=(",", ":"))
        return self._line(record)

    def _batchable(self) -> bool:
        """Only ``setup_logging``'s own handler, no filters, no propagation."""
        logger = self.logger
        handlers = logger.handlers
        return (len(handlers) == 1 and getattr(handlers[0], "_wsgiplus", False)
                and not handlers[0].filters and not logger.filters and not logger.propagate)

    def log(self, record: Any, conn: Any = None) -> None:
        """One finished exchange (``record`` is a ``wsgiplus.server.streams.ExchangeRecord``)."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        try:
            line = self.line(record)
            loop = getattr(conn, "loop", None)
            if loop is None or not self._batchable():
                self.flush()  # keep the order with lines batched before
                logger.info(line)
                return
            with self._lock:
                pending = self._pending
                pending.append(line)
                n = len(pending)
            if n == 1:
                loop.call_soon(self.flush)
            elif n >= self.BATCH_MAX:
                self.flush()
        except Exception:
            logging.getLogger("wsgiplus.error").exception("access log failed")

    def flush(self) -> None:
        """Write the pending lines (one record, one write); any thread."""
        with self._lock:
            lines = self._pending
            if not lines:
                return
            self._pending = []
        logger = self.logger
        try:
            rec = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "\n".join(lines), (), None)
            logger.handle(rec)
        except Exception:
            logging.getLogger("wsgiplus.error").exception("access log failed")

    def close(self) -> None:
        """Write what is pending and leave ``logging.shutdown``'s list."""
        self.flush()
        self._flusher.close()
