"""``wsgiplus [OPTIONS] [module:app]``: a thin shell over ``Config`` and the supervisor.

Settings come, weakest first, from the defaults, the ``FORWARDED_ALLOW_IPS``
environment variable, ``[tool.wsgiplus]`` in ./pyproject.toml or the file
named by ``--config``, and the command line. Options not given on the command
line do not override the file (argparse defaults are suppressed for that).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import Config
from .configfile import KINDS, ConfigFileError, coerce, find_pyproject, load_file

__all__ = ["build_parser", "config_from_args", "main"]

DEMO_APP = "wsgiplus.demo:app"
S = argparse.SUPPRESS


def _typed(name: str) -> Any:
    """An argparse ``type`` that converts like the config file does (sizes, 0 = off ...)."""

    def convert(text: str) -> Any:
        try:
            return coerce(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _metavar(name: str) -> str:
    kind = KINDS[name][0]
    if name.endswith("_size") or name.startswith("write_buffer"):
        return "SIZE"
    if kind == "float":
        return "SECONDS"
    if kind == "int":
        return "N"
    if name.endswith("file"):
        return "PATH"
    return "VALUE"


def _default(name: str) -> str:
    value = getattr(Config(), name)
    if value is None:
        return "off"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wsgiplus",
        description="Serve a WSGI app; apps that yield futures suspend without holding a thread.",
        argument_default=S,
    )

    group: Any = p

    def opt(*flags: str, field: str, help: str = "", **kw: Any) -> None:
        if "action" not in kw:
            kw.setdefault("type", _typed(field))
            if "choices" not in kw:
                kw.setdefault("metavar", _metavar(field))
        group.add_argument(*flags, dest=field, help=f"{help} (default: {_default(field)})".lstrip(), **kw)

    p.add_argument("app", nargs="?", default=S,
                   help=f"module:attribute of the WSGI app (default: the demo, {DEMO_APP})")
    p.add_argument("--version", action="version", version=f"wsgiplus {__version__}")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="a TOML file of settings (default: [tool.wsgiplus] in ./pyproject.toml)")
    p.add_argument("--factory", action="store_true", help="the app names a factory; call it")

    g = group = p.add_argument_group("sockets")
    g.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="HOST:PORT, [IPV6]:PORT, unix:/path or fd://N; repeatable (default 127.0.0.1:8000)")
    g.add_argument("--uds", action="append", metavar="PATH", help="a unix socket path (same as -b unix:PATH)")
    g.add_argument("--fd", action="append", type=int, dest="fds", metavar="N",
                   help="an inherited listening socket (socket activation); repeatable")
    opt("--backlog", field="backlog", help="listen queue length")

    g = group = p.add_argument_group("processes and threads")
    opt("-w", "--workers", field="workers", help="worker processes; 1 runs in this process")
    opt("-t", "--threads", field="threads", help="pool threads per worker")
    opt("--thread-affinity", field="thread_affinity", action=argparse.BooleanOptionalAction,
        help="resume a suspended request on the thread that started it (for thread-bound resources)")
    opt("--loop", field="loop", choices=["auto", "asyncio", "uvloop"], help="event loop")
    opt("--max-requests", field="max_requests", help="recycle a worker after this many requests (0: never)")
    opt("--max-requests-jitter", field="max_requests_jitter",
        help="add up to this many to --max-requests, per worker, so they do not recycle together")
    opt("--graceful-timeout", field="graceful_timeout",
        help="seconds in-flight requests (suspended ones too) get to finish on stop/reload")
    opt("--drain-grace", field="drain_grace",
        help="on stop/reload, idle keep-alive connections stay open this long, answering what "
             "arrives with Connection: close (a pooling proxy may be reusing them)")
    opt("--reload", field="reload", action=argparse.BooleanOptionalAction,
        help="restart the worker when a .py file changes (development)")
    p.add_argument("--reload-dir", action="append", dest="reload_dirs", metavar="DIR",
                   help="a directory to watch with --reload; repeatable (default: the working directory)")

    g = group = p.add_argument_group("limits")
    opt("--max-request-line", field="max_request_line", help="bytes; 414 beyond")
    opt("--max-header-count", field="max_header_count", help="431 beyond")
    opt("--max-header-size", field="max_header_size", help="bytes in one header field; 431 beyond")
    opt("--max-body-size", field="max_body_size", help="e.g. 10m; 413 beyond")
    opt("--body-spool-size", field="body_spool_size", help="request bodies above this go to a temp file")
    opt("--max-buffered-size", field="max_buffered_size",
        help="memory for buffered request heads and bodies, all connections; past it bodies go to "
             "temp files, incomplete heads get 503 (0: no limit)")
    opt("--max-connections", field="max_connections", help="open connections per worker (0: no limit)")
    opt("--max-suspended", field="max_suspended",
        help="suspended requests per worker; beyond it 503 (0: no limit)")
    opt("--write-buffer-high", field="write_buffer_high", help="pause the app above this many unsent bytes")
    opt("--write-buffer-low", field="write_buffer_low", help="resume it below this")

    g = group = p.add_argument_group("timeouts (seconds)")
    opt("--keepalive-timeout", field="keepalive_timeout", help="idle keep-alive connection")
    opt("--header-timeout", field="header_timeout", help="to receive a whole request head; 408 after")
    opt("--body-timeout", field="body_timeout", help="between two pieces of a request body; 408 after")
    opt("--body-min-rate", field="body_min_rate",
        help="bytes/s: a body must arrive within --body-timeout + received/rate; 408 after (0: off)")
    opt("--request-timeout", field="request_timeout",
        help="whole request, suspensions included; 504 (0: off)")
    opt("--suspend-timeout", field="suspend_timeout",
        help="one suspension; 504 if the head is not sent yet (0: off)")
    opt("--blocking-warn", field="blocking_warn",
        help="log the stack of an app step that holds a thread this long (0: off)")

    g = group = p.add_argument_group("WebSockets (request limits and timeouts do not apply to them)")
    opt("--max-websockets", field="max_websockets", help="open WebSockets per worker; beyond it 503 (0: no limit)")
    opt("--ws-max-message-size", field="ws_max_message_size", help="a larger message closes the socket (1009)")
    opt("--ws-ping-interval", field="ws_ping_interval", help="seconds: ping a socket silent this long (0: off)")
    opt("--ws-ping-timeout", field="ws_ping_timeout", help="seconds: close (1011) without a pong by then (0: off)")
    opt("--ws-idle-timeout", field="ws_idle_timeout", help="seconds without a message either way: close (0: off)")
    opt("--ws-timeout", field="ws_timeout", help="seconds: a socket's whole life (0: off)")
    opt("--ws-per-message-deflate", field="ws_per_message_deflate", action=argparse.BooleanOptionalAction,
        help="accept permessage-deflate compression")

    g = group = p.add_argument_group("HTTP, TLS and proxies")
    opt("--root-path", field="root_path", help="SCRIPT_NAME the app is mounted at")
    opt("--server-header", field="server_header", action=argparse.BooleanOptionalAction,
        help="send 'Server: wsgiplus'")
    opt("--url-scheme", field="url_scheme", choices=["http", "https"], help="wsgi.url_scheme of plain connections")
    opt("--certfile", field="certfile", help="TLS certificate chain (PEM); enables HTTPS")
    opt("--keyfile", field="keyfile", help="TLS private key (PEM)")
    opt("--keyfile-password", field="keyfile_password", help="password of an encrypted keyfile")
    opt("--proxy-headers", field="proxy_headers", action=argparse.BooleanOptionalAction,
        help="trust proxy headers (--forwarded-headers) from --forwarded-allow-ips")
    opt("--forwarded-headers", field="forwarded_headers", choices=["x-forwarded", "forwarded"],
        help="the one header family believed: X-Forwarded-For/-Proto/-Host/-Port or RFC 7239 Forwarded")
    opt("--forwarded-allow-ips", field="forwarded_allow_ips",
        help="comma-separated addresses/CIDRs (or '*') whose proxy headers are believed; "
             "env FORWARDED_ALLOW_IPS")

    g = group = p.add_argument_group("metrics and health")
    opt("--metrics-bind", field="metrics_bind",
        help="HOST:PORT or unix:PATH of a separate listener for Prometheus /metrics, /healthz and "
             "/readyz (503 once a graceful stop begins); needs wsgiplus[metrics]")
    opt("--statsd-host", field="statsd_host", help="HOST:PORT or unix:PATH: send gunicorn's statsd metrics")
    opt("--statsd-prefix", field="statsd_prefix", help="prefix of every statsd metric name")

    g = group = p.add_argument_group("logging")
    opt("--log-level", field="log_level", choices=["critical", "error", "warning", "info", "debug"])
    opt("--access-log", field="access_log", action=argparse.BooleanOptionalAction, help="one line per request")
    opt("--access-logfile", field="access_logfile", help="file for the access log; '-' is stdout")
    opt("--access-log-format", field="access_log_format",
        help="gunicorn atoms, or 'common'/'combined' (default: combined)")
    opt("--error-logfile", field="error_logfile", help="file for the error log; '-' is stderr")
    opt("--log-json", field="log_json", action=argparse.BooleanOptionalAction, help="JSON lines")
    return p


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    """Merge defaults, environment, config file and command line into a checked ``Config``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if env.get("FORWARDED_ALLOW_IPS"):
        values["forwarded_allow_ips"] = coerce("forwarded_allow_ips", env["FORWARDED_ALLOW_IPS"])
    path = getattr(args, "config", None) or find_pyproject()
    if path:
        values.update(load_file(path))
    cli = {k: v for k, v in vars(args).items() if k in Config.field_names()}
    binds = list(getattr(args, "bind", None) or []) + [f"unix:{u}" for u in getattr(args, "uds", None) or []]
    if binds:
        cli["bind"] = binds
    elif getattr(args, "fds", None) and "bind" not in values:
        cli["bind"] = []  # only the inherited sockets
    if "reload_dirs" in cli:
        cli["reload_dirs"] = [os.path.abspath(d) for d in cli["reload_dirs"]]
    values.update(cli)
    if getattr(args, "app", None):
        values["app"] = args.app
    values.setdefault("app", DEMO_APP)
    return Config(**values).validate()


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ConfigFileError, ValueError, TypeError) as exc:
        parser.exit(2, f"wsgiplus: {exc}\n")
    from .logconfig import setup_logging
    from .supervisor import run

    setup_logging(config)
    sys.exit(run(config))

