"""``wsgiplus [OPTIONS] [module:app]``: a thin shell over ``Config`` and ``Server``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .config import Config
from .importer import AppImportError, import_app
from .server import Server

__all__ = ["build_parser", "config_from_args", "main"]

DEMO_APP = "wsgiplus.demo:app"


def _size(text: str) -> int:
    text = text.strip().lower()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        prog="wsgiplus",
        description="Serve a WSGI app; apps that yield futures suspend without holding a thread.",
    )
    p.add_argument("app", nargs="?", default=DEMO_APP,
                   help=f"module:attribute of the WSGI app (default: the demo, {DEMO_APP})")
    p.add_argument("--version", action="version", version=f"wsgiplus {__version__}")
    p.add_argument("--factory", action="store_true", help="the app names a factory; call it")
    p.add_argument("-b", "--bind", action="append",
                   help="HOST:PORT, [IPV6]:PORT, unix:/path or fd://N; repeatable (default 127.0.0.1:8000)")
    p.add_argument("--uds", action="append", default=[], help="a unix socket path (same as -b unix:PATH)")
    p.add_argument("--fd", action="append", type=int, default=[], help="an inherited listening socket fd")
    p.add_argument("-t", "--threads", type=int, default=d.threads, help=f"pool threads (default {d.threads})")
    p.add_argument("--root-path", default=d.root_path, help="SCRIPT_NAME the app is mounted at")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default=d.loop)
    p.add_argument("--backlog", type=int, default=d.backlog)
    p.add_argument("--max-request-line", type=int, default=d.max_request_line)
    p.add_argument("--max-header-count", type=int, default=d.max_header_count)
    p.add_argument("--max-header-size", type=int, default=d.max_header_size)
    p.add_argument("--max-body-size", type=_size, default=d.max_body_size, help="e.g. 10m; 413 beyond")
    p.add_argument("--body-spool-size", type=_size, default=d.body_spool_size)
    p.add_argument("--keepalive-timeout", type=float, default=d.keepalive_timeout)
    p.add_argument("--header-timeout", type=float, default=d.header_timeout)
    p.add_argument("--body-timeout", type=float, default=d.body_timeout)
    p.add_argument("--request-timeout", type=float, default=d.request_timeout,
                   help="per-request deadline, suspensions included (504); off by default")
    p.add_argument("--graceful-timeout", type=float, default=d.graceful_timeout)
    p.add_argument("--no-server-header", dest="server_header", action="store_false")
    p.add_argument("--log-level", default=d.log_level,
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    fields = Config.field_names()
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    binds = list(args.bind or []) + [f"unix:{path}" for path in args.uds]
    if not binds and not args.fd:
        binds = ["127.0.0.1:8000"]
    values["bind"] = binds
    values["fds"] = list(args.fd)
    return Config(**values)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    setup_logging(config.log_level)
    try:
        app = import_app(args.app, factory=args.factory)
    except AppImportError as exc:
        sys.exit(f"wsgiplus: {exc}")
    config.app = args.app
    try:
        Server(app, config).run()
    except OSError as exc:
        sys.exit(f"wsgiplus: {exc}")
