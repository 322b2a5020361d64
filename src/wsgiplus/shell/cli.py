"""``wsgiplus [OPTIONS] [module:app]``: a thin shell over ``Config`` and the supervisor.

Settings come, weakest first, from the defaults, the ``FORWARDED_ALLOW_IPS``
environment variable, ``[tool.wsgiplus]`` in ./pyproject.toml or the file
named by ``--config`` (TOML, or a ``gunicorn.conf.py``), and the command line.
Options not given on the command line do not override the file (argparse
defaults are suppressed for that).

Every ``Config`` field has a flag: the hand-written ones below (grouped, with
help and gunicorn's/uvicorn's spellings), and ``--field-name`` for any field
added later (``_remaining_fields``), typed like the config file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from .banner import DEMO_APP
from .config import Config
from .configfile import KINDS, ConfigFileError, coerce, find_pyproject, load_file

__all__ = ["Settings", "build_parser", "config_from_args", "load_settings", "main"]

S = argparse.SUPPRESS


def _typed(name: str, lower: bool = False) -> Any:
    """An argparse ``type`` that converts like the config file does (sizes, 0 = off ...)."""

    def convert(text: str) -> Any:
        try:
            value = coerce(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value.lower() if lower and isinstance(value, str) else value

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
            kw.setdefault("type", _typed(field, lower="choices" in kw))  # choices in any case
            if "choices" not in kw:
                kw.setdefault("metavar", _metavar(field))
        if "(default:" not in help:
            help = f"{help} (default: {_default(field)})".lstrip()
        group.add_argument(*flags, dest=field, help=help, **kw)

    p.add_argument("app", nargs="?", default=S,
                   help=f"module:attribute of the WSGI app (default: the demo, {DEMO_APP})")
    p.add_argument("--version", action="version", version=f"wsgiplus {__version__}")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="a TOML file of settings, or a gunicorn.conf.py (read as gunicorn does) "
                        "(default: [tool.wsgiplus] in ./pyproject.toml)")
    p.add_argument("--factory", action="store_true", help="the app names a factory; call it")

    g = group = p.add_argument_group("sockets")
    g.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="HOST:PORT, [IPV6]:PORT, unix:/path or fd://N; repeatable (default 127.0.0.1:8000)")
    g.add_argument("--uds", action="append", metavar="PATH", help="a unix socket path (same as -b unix:PATH)")
    g.add_argument("--fd", action="append", type=int, dest="fds", metavar="N",
                   help="an inherited listening socket (socket activation); repeatable")
    g.add_argument("--host", metavar="HOST", help="uvicorn's spelling: bind HOST:--port (default 127.0.0.1)")
    g.add_argument("--port", metavar="PORT", help="uvicorn's spelling: bind --host:PORT (default 8000)")
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
    opt("--reload-include", "--reload-extra-file", field="reload_include", action="extend",
        type=_typed("reload_include"), metavar="GLOB",
        help="also watch files matching this glob (e.g. '*.html', 'conf/*.toml'); repeatable")
    opt("--reload-exclude", field="reload_exclude", action="extend", type=_typed("reload_exclude"),
        metavar="GLOB", help="never watch files matching this glob; repeatable")
    opt("--preload", field="preload", action=argparse.BooleanOptionalAction,
        help="import the app in the supervisor before forking the workers (they share its memory)")

    g = group = p.add_argument_group("the process")
    opt("--chdir", field="chdir", metavar="DIR", help="change to DIR before reading settings and the app")
    opt("--pythonpath", "--app-dir", field="pythonpath", action="extend", type=_typed("pythonpath"),
        metavar="DIRS", help="comma-separated directories put first on sys.path; repeatable")
    opt("-p", "--pid", "--pidfile", field="pidfile", help="write the server's pid to this file")
    opt("-e", "--env", field="env", action="append", type=str, metavar="KEY=VALUE",
        help="set an environment variable for the app; repeatable")
    opt("--env-file", field="env_file",
        help="read environment variables from a .env file (those already set win)")

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
    opt("--sendfile", field="sendfile", action=argparse.BooleanOptionalAction,
        help="send wsgi.file_wrapper files with os.sendfile on plain TCP (default on)")
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

    g = group = p.add_argument_group("HTTP/2")
    opt("--http2", field="http2", action=argparse.BooleanOptionalAction,
        help="serve HTTP/2: h2c by prior knowledge or Upgrade on plain listeners, ALPN h2 with TLS")
    opt("--h2-max-concurrent-streams", field="h2_max_concurrent_streams",
        help="streams per connection (those still being answered after a client reset included)")
    opt("--h2-max-header-list-size", field="h2_max_header_list_size",
        help="decoded request head; larger ends the connection (HPACK bomb, CONTINUATION flood)")
    opt("--h2-header-table-size", field="h2_header_table_size", help="HPACK dynamic table")
    opt("--h2-initial-window-size", field="h2_initial_window_size", help="per-stream window for request bodies")
    opt("--h2-connection-window-size", field="h2_connection_window_size",
        help="per-connection window for request bodies")
    opt("--h2-idle-timeout", field="h2_idle_timeout", help="no stream open: GOAWAY and close (0: off)")
    opt("--h2-ping-timeout", field="h2_ping_timeout",
        help="streams open and the client silent: PING, close if unanswered this long (0: off)")
    opt("--h2-window-timeout", field="h2_window_timeout",
        help="a response stuck on a zero flow-control window is reset after this (0: off)")

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
    opt("--log-config", field="log_config", metavar="FILE",
        help="a logging config file: dictConfig as .json or .toml, or fileConfig .ini")
    _spellings(p)
    _remaining_fields(p)
    return p


def _alias(group: Any, *flags: str, field: str, zero: int | None = None, note: str = "") -> None:
    """Another spelling of a setting's flag (gunicorn's or uvicorn's); ``zero``: what 0 means."""
    typed = _typed(field)

    def convert(text: str) -> Any:
        if zero is not None and text.strip() == "0":
            return zero
        return typed(text)

    convert.__name__ = field
    main_flag = "--" + field.replace("_", "-")
    group.add_argument(*flags, dest=field, type=convert, metavar=_metavar(field),
                       help=f"= {main_flag}{note}")


# gunicorn flags a user may carry over that WSGI+ has no equivalent for: refused with why
REFUSED = [
    (("-k", "--worker-class"), "the wsgiplus command is the worker; to keep gunicorn's arbiter, run "
                               "gunicorn -k wsgiplus.gunicorn.Worker (docs/migration.md)"),
    (("-D", "--daemon"), "WSGI+ does not daemonize; run it under systemd or a container"),
    (("-u", "--user"), "WSGI+ does not switch users; use systemd's User= (or start it as that user)"),
    (("-g", "--group"), "WSGI+ does not switch groups; use systemd's Group="),
]


class _Refuse(argparse.Action):
    """A flag from gunicorn that WSGI+ does not have: a usage error that says why."""

    def __init__(self, option_strings: Sequence[str], dest: str, why: str = "", **kw: Any) -> None:
        super().__init__(option_strings, dest=S, **kw)
        self.why = why

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.exit(2, f"wsgiplus: {option_string}: {self.why}\n")


def _spellings(p: argparse.ArgumentParser) -> None:
    from .gunicornconf import UNLIMITED

    g = p.add_argument_group("gunicorn and uvicorn spellings")
    _alias(g, "--keep-alive", "--keepalive", "--timeout-keep-alive", field="keepalive_timeout")
    _alias(g, "--timeout-graceful-shutdown", field="graceful_timeout")
    _alias(g, "--limit-request-line", field="max_request_line", zero=UNLIMITED, note=" (0: 1 MiB)")
    _alias(g, "--limit-request-fields", field="max_header_count", zero=32768, note=" (0: 32768)")
    _alias(g, "--limit-request-field_size", "--limit-request-field-size", field="max_header_size",
           zero=UNLIMITED, note=" (0: 1 MiB)")
    _alias(g, "--worker-connections", "--limit-concurrency", field="max_connections")
    _alias(g, "--limit-max-requests", field="max_requests")
    _alias(g, "--limit-max-requests-jitter", field="max_requests_jitter")
    _alias(g, "--ssl-certfile", field="certfile")
    _alias(g, "--ssl-keyfile", field="keyfile")
    _alias(g, "--ssl-keyfile-password", field="keyfile_password")
    _alias(g, "--access-logformat", field="access_log_format")
    _alias(g, "--log-file", field="error_logfile")
    _alias(g, "--http2-max-concurrent-streams", field="h2_max_concurrent_streams")
    _alias(g, "--http2-initial-window-size", field="h2_initial_window_size")
    _alias(g, "--http2-max-header-list-size", field="h2_max_header_list_size")
    g.add_argument("--http-protocols", dest="http2", type=_http_protocols, metavar="LIST",
                   help="gunicorn's h2,h1 / h1: = --http2 / --no-http2")
    for flags, why in REFUSED:
        g.add_argument(*flags, action=_Refuse, nargs="?", why=why, help=argparse.SUPPRESS)
    g.add_argument("--timeout", dest="gunicorn_timeout", metavar="SECONDS",
                   help="gunicorn's worker timeout: ignored, with a warning (a slow or suspended request "
                        "never gets a worker killed; see --request-timeout and --blocking-warn)")


def _http_protocols(text: str) -> bool:
    from .gunicornconf import http2_wanted

    return http2_wanted(text)


def _remaining_fields(p: argparse.ArgumentParser) -> None:
    """A flag for every Config field that has none above: ``--field-name``, typed like the file.

    Fields added to ``Config`` get a flag without an edit here; a field's
    ``metadata["help"]`` becomes its help text.
    """
    import dataclasses

    have = {a.dest for a in p._actions}
    missing = [f for f in dataclasses.fields(Config) if f.name not in have]
    if not missing:
        return
    g = p.add_argument_group("more settings")
    for f in missing:
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata.get('help', '')} (default: {_default(f.name)})".lstrip()
        kind = KINDS[f.name][0]
        if kind == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
        elif kind.startswith("list["):
            g.add_argument(flag, dest=f.name, action="extend", type=_typed(f.name), metavar=_metavar(f.name),
                           help=text + "; comma-separated, repeatable")
        else:
            g.add_argument(flag, dest=f.name, type=_typed(f.name), metavar=_metavar(f.name), help=text)


class Settings:
    """What ``load_settings`` found: the config, where it came from, what to warn about."""

    def __init__(self, config: Config, sources: list[str], warnings: list[str]) -> None:
        self.config, self.sources, self.warnings = config, sources, warnings


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    """Merge defaults, environment, config file and command line into a checked ``Config``."""
    return load_settings(args, environ).config


def load_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """``config_from_args``, where the settings came from (weakest first) and warnings to log."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = ["defaults"]
    warnings: list[str] = []
    if env.get("FORWARDED_ALLOW_IPS"):
        values["forwarded_allow_ips"] = coerce("forwarded_allow_ips", env["FORWARDED_ALLOW_IPS"])
        sources.append("$FORWARDED_ALLOW_IPS")
    given = getattr(args, "config", None)
    path = given or find_pyproject()
    if given and str(given).endswith(".py"):
        from .configfile import normalize
        from .gunicornconf import load_gunicorn_file

        raw, ignored = load_gunicorn_file(given)
        values.update(normalize(raw, str(given)))
        sources.append(f"{given} (gunicorn)")
        if ignored:
            warnings.append(f"{given}: gunicorn settings WSGI+ ignores: {', '.join(ignored)} "
                            "(see docs/migration.md)")
    elif path:
        from_file = load_file(path)
        values.update(from_file)
        if given:
            sources.append(str(given))
        elif from_file:  # a pyproject.toml nobody named: say so, it changes the run
            sources.append(f"{path} [tool.wsgiplus] (found in the working directory)")
    cli = {k: v for k, v in vars(args).items() if k in Config.field_names()}
    binds = list(getattr(args, "bind", None) or []) + [f"unix:{u}" for u in getattr(args, "uds", None) or []]
    host, port = getattr(args, "host", None), getattr(args, "port", None)
    if host is not None or port is not None:  # uvicorn's --host/--port
        host = host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        binds.append(f"{host}:{port if port is not None else 8000}")
    if binds:
        cli["bind"] = binds
    elif getattr(args, "fds", None) and "bind" not in values:
        cli["bind"] = []  # only the inherited sockets
    for name in ("reload_dirs", "pythonpath"):
        if name in cli:
            cli[name] = [os.path.abspath(d) for d in cli[name]]
    values.update(cli)
    if getattr(args, "app", None):
        values["app"] = args.app
    if cli or getattr(args, "app", None):
        sources.append("command line")
    if getattr(args, "gunicorn_timeout", None) is not None:
        warnings.append(f"--timeout {args.gunicorn_timeout} ignored: WSGI+ never kills a worker for a "
                        "slow request (a suspended one holds no thread); use --request-timeout for a "
                        "per-request deadline (504) and --blocking-warn to hear about app code that "
                        "holds a thread")
    values.setdefault("app", DEMO_APP)
    return Settings(Config(**values).validate(), sources, warnings)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    chdir = getattr(args, "chdir", None)
    if chdir:  # first, so ./pyproject.toml and the app are found there; a --config FILE is not moved
        if getattr(args, "config", None):
            args.config = os.path.abspath(args.config)
        try:
            os.chdir(chdir)
        except OSError as exc:
            parser.exit(2, f"wsgiplus: --chdir {chdir}: {exc.strerror}\n")
        args.chdir = os.getcwd()
    try:
        settings = load_settings(args)
    except (ConfigFileError, ValueError, TypeError) as exc:
        parser.exit(2, f"wsgiplus: {exc}\n")
    config = settings.config
    from .logconfig import setup_logging
    from .supervisor import run

    try:
        setup_logging(config)
    except (OSError, ValueError) as exc:  # a log file that cannot be opened, a bad --log-config
        parser.exit(2, f"wsgiplus: {exc}\n")
    import logging

    for warning in settings.warnings:
        logging.getLogger("wsgiplus.error").warning("%s", warning)
    sys.exit(run(config, sources=settings.sources))
