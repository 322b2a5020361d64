"""A gunicorn worker class: ``gunicorn -k wsgiplus.gunicorn.Worker --threads 8 app:app``.

gunicorn's arbiter keeps doing what it does (binding, forking, signals,
``--max-requests``, ``--reload``, hooks, logging setup); each worker runs the
WSGI+ engine on gunicorn's listening sockets, so apps that yield futures
suspend without holding one of the ``--threads``.

The heartbeat comes from an event-loop timer, not from a request finishing:
a request suspended longer than ``--timeout`` does not get the worker killed
(app code that *blocks* a thread is reported by WSGI+'s ``blocking_warn``).

A gunicorn setting the user did not set does not override ``$WSGIPLUS_CONFIG``;
with no ``--threads`` anywhere the worker runs WSGI+'s 8, not gunicorn's 1.

gunicorn settings used: bind (its sockets), threads, backlog, keepalive,
graceful_timeout, max_requests (+ jitter), limit_request_line/fields/
field_size (0 = unlimited), worker_connections (max open connections),
forwarded_allow_ips (proxy headers of the forwarded_headers family are believed from these),
certfile/keyfile, accesslog/access_log_format (lines go through gunicorn's
own logger), loglevel/errorlog, http_protocols (HTTP/2 when it names h2) and
http2_max_concurrent_streams/initial_window_size/max_header_list_size. WSGI+-only settings (max_suspended,
suspend_timeout, header_timeout, ...) come from the TOML file named by the
``WSGIPLUS_CONFIG`` environment variable, if set.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import shlex
import signal
import sys
from types import SimpleNamespace
from typing import Any

from gunicorn.workers import base

from .server.core import new_event_loop
from .shell.config import Config
from .shell.gunicornconf import http2_wanted
from .shell.supervisor import WorkerServer

__all__ = ["Worker"]

UNLIMITED = 1024 * 1024  # what gunicorn's 0 ("no limit") becomes for line and field sizes


class GunicornServer(WorkerServer):
    """The server inside a gunicorn worker: its access lines go to gunicorn's access log."""

    def __init__(self, worker: Worker, config: Config) -> None:
        max_requests = worker.max_requests if worker.cfg.max_requests > 0 else 0
        super().__init__(worker.wsgi, config, max_requests=max_requests,
                         on_max_requests=worker.max_requests_reached)
        self.worker = worker

    def access(self, conn: Any, record: Any) -> None:
        super().access(conn, record)
        self.worker.log_access(record)


def _request_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-"), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers.append((key.replace("_", "-"), value))
    return headers


def explicit_settings(cfg: Any) -> set[str]:
    """The gunicorn settings the user set: on the command line or ``GUNICORN_CMD_ARGS`` (even
    to the default value), or anywhere else to a value other than the default."""
    names = set()
    for name, setting in cfg.settings.items():
        try:
            default = setting.validator(setting.default) if setting.validator else setting.default
            if setting.value != default:
                names.add(name)
        except Exception:  # a default that does not validate alone: judge by the command line
            continue
    try:
        argv = sys.argv[1:] + shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
        given, _ = cfg.parser().parse_known_args(argv)
        names |= {k for k, v in vars(given).items() if v is not None and k in cfg.settings}
    except (SystemExit, Exception):  # an embedding program's own argv: values alone decide
        pass
    return names


class Worker(base.Worker):
    """gunicorn worker running the WSGI+ server on one event loop and a pool of ``--threads``."""

    server: GunicornServer | None = None
    quick = False

    def init_signals(self) -> None:
        # gunicorn's handlers would interrupt the loop; the loop installs its own in run()
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def wsgiplus_config(self) -> Config:
        """gunicorn's settings, in WSGI+ terms, with ``$WSGIPLUS_CONFIG`` (a TOML file) if given.

        Precedence: a gunicorn setting you set (command line, ``GUNICORN_CMD_ARGS``,
        a config file value other than the default) > ``$WSGIPLUS_CONFIG`` >
        gunicorn's default, except ``threads``, whose gunicorn default (1: one
        running request at a time) gives way to WSGI+'s. ``graceful_timeout`` is
        always gunicorn's: its arbiter kills the worker after it.
        """
        cfg = self.cfg
        from_file: dict[str, Any] = {}
        path = os.environ.get("WSGIPLUS_CONFIG")
        if path:
            from .shell.configfile import load_file

            from_file = load_file(path)
        explicit = explicit_settings(cfg)
        values = dict(from_file)

        def take(field: str, setting: str, value: Any, gunicorn_default: bool = True) -> None:
            if setting in explicit or (gunicorn_default and field not in from_file):
                values[field] = value

        take("threads", "threads", cfg.threads, gunicorn_default=False)
        take("keepalive_timeout", "keepalive", float(cfg.keepalive))
        take("max_request_line", "limit_request_line", cfg.limit_request_line or UNLIMITED)
        take("max_header_count", "limit_request_fields", cfg.limit_request_fields or 32768)
        take("max_header_size", "limit_request_field_size", cfg.limit_request_field_size or UNLIMITED)
        take("max_connections", "worker_connections", cfg.worker_connections or None)
        take("forwarded_allow_ips", "forwarded_allow_ips", list(cfg.forwarded_allow_ips))
        take("certfile", "certfile", cfg.certfile if cfg.is_ssl else None)
        take("keyfile", "keyfile", cfg.keyfile if cfg.is_ssl else None)
        take("log_level", "loglevel", str(cfg.loglevel).lower())
        if "graceful_timeout" in from_file and from_file["graceful_timeout"] != float(cfg.graceful_timeout):
            self.log.warning("WSGIPLUS_CONFIG graceful_timeout %s ignored: gunicorn's arbiter stops the worker "
                             "after its --graceful-timeout (%s)", from_file["graceful_timeout"],
                             cfg.graceful_timeout)
        values.update(
            app=None,
            bind=[],
            fds=[],
            workers=cfg.workers,
            backlog=cfg.backlog,
            graceful_timeout=float(cfg.graceful_timeout),
            proxy_headers=True,
            access_log=False,  # gunicorn's access log writes the lines (see log_access)
            max_requests=0,  # gunicorn's arbiter recycles; see max_requests_reached
            reload=False,
            log_level=str(cfg.loglevel).lower(),
            statsd_host=None,  # gunicorn's own --statsd-host sees every request (log_access)
            preload=False,
            pidfile=None,
            chdir=None,
            log_config=None,
        )
        protocols = getattr(cfg, "http_protocols", None)
        if protocols:  # gunicorn >= 25 says whether HTTP/2 is wanted (its default, h1: no)
            values.update(
                http2=http2_wanted(protocols),
                h2_max_concurrent_streams=cfg.http2_max_concurrent_streams,
                h2_initial_window_size=max(1024, cfg.http2_initial_window_size),
                h2_max_header_list_size=max(1024, cfg.http2_max_header_list_size),
            )
        return Config(**values).validate()

    def _route_logs(self) -> None:
        """WSGI+'s logs (``wsgiplus.error``, ``wsgiplus.bridge`` ...) go wherever gunicorn's error log goes."""
        error_log = getattr(self.log, "error_log", None)
        if error_log is None:
            return
        ours = logging.getLogger("wsgiplus")
        ours.handlers = list(error_log.handlers)
        ours.setLevel(error_log.level)
        ours.propagate = False

    def log_access(self, record: Any) -> None:
        """One finished exchange (a ``wsgiplus.server.streams.ExchangeRecord``) to gunicorn's access log."""
        if not getattr(self.log, "access_log_enabled", True):
            return
        environ = record.environ
        status = str(record.status) if record.status is not None else "-"
        resp = SimpleNamespace(status=status, headers=list(record.response_headers or []),
                               sent=record.bytes_sent)
        req = SimpleNamespace(headers=_request_headers(environ))
        request_time = datetime.timedelta(seconds=record.duration)
        try:
            self.log.access(resp, req, environ, request_time)
        except Exception:
            self.log.exception("access log failed")

    def max_requests_reached(self) -> None:
        self.log.info("Autorestarting worker after current request.")
        self.alive = False
        if self.server is not None:
            self.server.request_stop()

    def run(self) -> None:
        self._route_logs()
        loop = new_event_loop("auto")
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.server = GunicornServer(self, self.wsgiplus_config())
        await server.start([getattr(s, "sock", s) for s in self.sockets])
        metrics = None
        if server.config.metrics_bind:
            # every worker listens (SO_REUSEPORT); with PROMETHEUS_MULTIPROC_DIR set each
            # answers for all of them
            from .shell.metrics import WorkerMetrics, bind_metrics_socket, multiprocess_dir

            metrics = WorkerMetrics(server, server.config, loop,
                                    listener_sock=bind_metrics_socket(server.config.metrics_bind, reuse_port=True),
                                    multiprocess=bool(multiprocess_dir()))

        def stop(quick: bool) -> None:
            self.alive = False
            self.quick = self.quick or quick
            if metrics is not None:  # not ready: scrapes and probes go to the other workers
                metrics.stop_listening()
            server.request_stop()

        def abort() -> None:
            self.alive = False
            self.cfg.worker_abort(self)
            sys.exit(1)

        loop.add_signal_handler(signal.SIGTERM, stop, False)
        loop.add_signal_handler(signal.SIGINT, stop, True)
        loop.add_signal_handler(signal.SIGQUIT, stop, True)
        loop.add_signal_handler(signal.SIGABRT, abort)
        loop.add_signal_handler(signal.SIGWINCH, lambda: None)
        interval = min(1.0, self.timeout / 2) if self.timeout else 1.0

        def heartbeat() -> None:
            # Keeps beating while the worker drains, so a graceful stop longer than
            # --timeout is not cut short by the arbiter either.
            if not self.alive:  # max_requests or gunicorn's --reload said so
                server.request_stop()
            elif os.getppid() != self.ppid:
                self.log.info("Parent changed, shutting down: %s", self)
                stop(False)
            self.notify()
            loop.call_later(interval, heartbeat)

        heartbeat()
        await server.wait_stopped()
        if self.quick:
            self.cfg.worker_int(self)
        if metrics is not None:
            metrics.stop_listening()
        await server.shutdown(0.0 if self.quick else float(self.cfg.graceful_timeout))
        if metrics is not None:
            metrics.close()
