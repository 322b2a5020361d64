"""The startup banner: what runs, where to reach it, where its settings came from, how to stop it.

Logged once, after the sockets listen (so port 0 shows the real port), by the
process the user started: the single in-process worker or the supervisor.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
from collections.abc import Sequence

from .. import __version__
from .._compiled import compiled
from ..server.listeners import all_interfaces
from .config import Config

log = logging.getLogger("wsgiplus.error")

__all__ = ["DEMO_APP", "banner_lines", "log_banner", "loop_name", "url"]

DEMO_APP = "wsgiplus.demo:app"


def loop_name(kind: str) -> str:
    """The event loop ``kind`` ('auto', 'asyncio', 'uvloop') gives on this machine."""
    if kind == "uvloop" or (kind == "auto" and importlib.util.find_spec("uvloop") is not None):
        return "uvloop"
    return "asyncio"


def url(address: str, tls: bool) -> str:
    """``http://host:port`` for a TCP address (clickable in a terminal), else the address."""
    if address.startswith(("unix:", "fd://")):
        return address
    return f"{'https' if tls else 'http'}://{address}"


def banner_lines(config: Config, addresses: Sequence[str], *, sources: Sequence[str] = (),
                 supervisor_pid: int | None = None, loop: str | None = None) -> list[tuple[int, str]]:
    """(level, line) pairs; warnings for what a user should not miss."""
    info, warn = logging.INFO, logging.WARNING
    app = config.app if isinstance(config.app, str) else getattr(config.app, "__qualname__", repr(config.app))
    lines = [(info, f"WSGI+ {__version__} on {platform.python_implementation()} {platform.python_version()}, "
                    f"{loop or loop_name(config.loop)} event loop"
                    f"{', request path compiled (mypyc)' if compiled() else ''}")]
    if supervisor_pid is None:
        procs = f"one process (pid {os.getpid()}) x {config.threads} threads"
    else:
        procs = f"{config.workers} worker processes x {config.threads} threads, supervisor pid {supervisor_pid}"
    lines.append((info, f"app {app}: {procs}"))
    if sources:
        lines.append((info, "settings: " + " < ".join(sources)))
    if config.app == DEMO_APP:
        lines.append((warn, f"no app given: serving the built-in demo ({DEMO_APP}); "
                            "name yours: wsgiplus module:app"))
    tls = bool(config.certfile)
    for address in addresses:
        lines.append((info, f"serving on {url(address, tls)}"))
        if all_interfaces(address):
            lines.append((warn, f"{address} is every network interface: reachable from other machines "
                                "(bind 127.0.0.1:PORT for this machine only)"))
    if config.reload:
        from .reload import backend

        dirs = ", ".join(config.reload_dirs or [os.getcwd()])
        how = ("watchfiles" if backend() == "watchfiles"
               else "stat() polling; pip install 'wsgiplus[reload]' for watchfiles")
        patterns = " ".join(["*.py", *config.reload_include] + [f"!{p}" for p in config.reload_exclude])
        lines.append((info, f"reload: watching {patterns} under {dirs} ({how})"))
    lines.append((info, "press Ctrl-C to stop (twice to stop now)"))
    return lines


def log_banner(config: Config, addresses: Sequence[str], **kwargs: object) -> None:
    for level, line in banner_lines(config, addresses, **kwargs):  # type: ignore[arg-type]
        log.log(level, "%s", line)
