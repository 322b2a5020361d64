"""Running out of file descriptors (EMFILE): back off, say so once, keep serving.

asyncio's own accept loop answers EMFILE by logging a traceback and retrying
once per pending connection in the backlog (up to ``backlog`` times per
wake-up, each with its own retry timer): megabytes of log a second and a busy
loop. ``SelectorLoop`` stops accepting on the first EMFILE instead, and
resumes after ``ACCEPT_BACKOFF`` seconds: clients wait in the kernel's accept
queue, the connections already open are served. uvloop (libuv) handles EMFILE
itself (it accepts and closes the pending connection with a reserve fd) and
tells nobody, so the server's sweep calls ``probe()`` once a second. Both log
through ``warn()``: one line per ``LOG_EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from typing import Any

try:  # imported now: at the limit, an import cannot open its file
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = ["SelectorLoop", "probe", "warn"]

log = logging.getLogger("wsgiplus.error")

ACCEPT_BACKOFF = 0.5  # seconds without accepting after an EMFILE
LOG_EVERY = 10.0
_OUT_OF = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_last_logged = [-1e9]


def _soft_limit() -> str:
    if resource is None:
        return "?"
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def warn(exc: OSError, what: str) -> None:
    """One line at most every LOG_EVERY seconds."""
    now = time.monotonic()
    if now - _last_logged[0] >= LOG_EVERY:
        _last_logged[0] = now
        log.warning("out of file descriptors (%s, RLIMIT_NOFILE %s): %s; raise the limit (ulimit -n) "
                    "or lower max_connections", errno.errorcode.get(exc.errno or 0, exc), _soft_limit(), what)


def probe(what: str) -> bool:
    """Is this process at its fd limit? (opens and closes one fd); warns if so."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _OUT_OF:
            warn(exc, what)
            return True
        return False
    os.close(fd)
    return False


class _Guard:
    """The listening socket as asyncio's accept loop sees it: EMFILE ends the loop and backs off."""

    __slots__ = ("sock", "backoff")

    def __init__(self, sock: Any, backoff: Any) -> None:
        self.sock = sock
        self.backoff = backoff

    def accept(self) -> tuple[Any, Any]:
        try:
            return self.sock.accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF:
                raise
            self.backoff(exc)
            raise BlockingIOError(errno.EAGAIN, "backing off") from None  # ends asyncio's loop

    def fileno(self) -> int:
        return self.sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class SelectorLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, with a back-off instead of a spin when accept() runs out of fds."""

    def _accept_connection(self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any) -> None:
        def backoff(exc: OSError) -> None:
            warn(exc, f"not accepting new connections for {ACCEPT_BACKOFF}s (they wait in the backlog); "
                      "open connections are still served")
            self._remove_reader(sock.fileno())  # type: ignore[attr-defined]
            self.call_later(ACCEPT_BACKOFF, self._resume_accepting, protocol_factory, sock, args, kwargs)

        super()._accept_connection(protocol_factory, _Guard(sock, backoff), *args, **kwargs)  # type: ignore[misc]

    def _resume_accepting(self, protocol_factory: Any, sock: Any, args: tuple, kwargs: dict) -> None:
        if sock.fileno() >= 0:  # not closed meanwhile (server stopping)
            self._start_serving(protocol_factory, sock, *args, **kwargs)  # type: ignore[attr-defined]
