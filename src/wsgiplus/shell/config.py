"""Server settings: one dataclass, shared by the CLI, the API and the gunicorn worker.

Names follow gunicorn and uvicorn where they mean the same thing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocols.http11 import Limits

__all__ = ["Config"]


@dataclass
class Config:
    """Everything that shapes how a server runs; defaults are production-sane."""

    app: str | Callable[..., Any] | None = None
    factory: bool = False  # app names a callable returning the WSGI app
    bind: list[str] = field(default_factory=lambda: ["127.0.0.1:8000"])
    fds: list[int] = field(default_factory=list)  # inherited listening sockets
    threads: int = 8
    thread_affinity: bool = False  # resume a request on the thread that started it
    root_path: str = ""  # SCRIPT_NAME
    loop: str = "auto"  # auto | asyncio | uvloop
    backlog: int = 2048
    # request limits
    max_request_line: int = 8190
    max_header_count: int = 100
    max_header_size: int = 8190
    max_body_size: int = 1024 * 1024 * 1024
    body_spool_size: int = 1024 * 1024  # bodies above this go to a temp file
    # memory held by buffered request heads and bodies, all connections of a worker:
    # past it bodies go to temp files and incomplete heads get 503
    max_buffered_size: int | None = 128 * 1024 * 1024
    # timeouts, seconds
    keepalive_timeout: float = 5.0  # idle keep-alive connection
    header_timeout: float = 10.0  # from a connection's first byte to a complete head
    body_timeout: float = 30.0  # between two pieces of a request body
    # and in total: body_timeout + bytes received / body_min_rate (a trickle is cut; 408)
    body_min_rate: int | None = 500  # bytes per second, averaged
    request_timeout: float | None = None  # whole request, suspensions included
    graceful_timeout: float = 30.0
    drain_grace: float = 1.0  # graceful stop: idle keep-alive connections stay open this long
    # flow control
    write_buffer_high: int = 256 * 1024
    write_buffer_low: int = 64 * 1024
    max_connections: int | None = None
    max_suspended: int | None = None  # per worker; beyond it a suspending request gets 503
    suspend_timeout: float | None = None  # one suspension; 504 if the head is not sent yet
    # WebSockets (environ["wsgiplus.websocket"]); not requests: request_timeout,
    # max_suspended and suspend_timeout do not apply to an accepted socket
    max_websockets: int | None = None  # open sockets per worker; beyond it accept() answers 503
    ws_max_message_size: int = 16 * 1024 * 1024  # a larger message closes the socket with 1009
    ws_ping_interval: float | None = 20.0  # ping a socket silent this long
    ws_ping_timeout: float | None = 20.0  # close (1011) if the pong has not come by then
    ws_idle_timeout: float | None = None  # close (1001) a socket with no message either way
    ws_timeout: float | None = None  # a socket's whole life (1001 after it)
    ws_per_message_deflate: bool = True  # accept permessage-deflate when the client offers it
    blocking_warn: float | None = 30.0  # warn, with the stack, when one app step runs this long
    # HTTP/2 (h2c by prior knowledge or Upgrade on plain listeners, ALPN h2 with TLS)
    http2: bool = True
    h2_max_concurrent_streams: int = 100  # per connection, streams still being answered included
    h2_max_header_list_size: int = 64 * 1024  # decoded request head; larger: connection error
    h2_header_table_size: int = 4096  # HPACK dynamic table
    h2_initial_window_size: int = 256 * 1024  # per stream, for request bodies
    h2_connection_window_size: int = 1024 * 1024  # per connection, for request bodies
    h2_idle_timeout: float | None = 60.0  # no stream open: GOAWAY and close
    h2_ping_timeout: float | None = 20.0  # streams open and the client silent: PING, close if unanswered
    h2_window_timeout: float | None = 30.0  # response stuck on a zero flow-control window: stream reset
    # identity, TLS, proxies
    server_header: bool = True
    url_scheme: str = "http"
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    proxy_headers: bool = True  # trust proxy headers (as gunicorn and uvicorn do) ...
    forwarded_allow_ips: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])  # ... from these
    forwarded_headers: str = "x-forwarded"  # ... of this family: x-forwarded (X-Forwarded-*) or forwarded
    # processes
    workers: int = 1
    max_requests: int = 0  # recycle a worker after this many requests (0: never)
    max_requests_jitter: int = 0
    reload: bool = False  # development: restart the worker when a .py file changes
    reload_dirs: list[str] = field(default_factory=list)  # watched for --reload (default: cwd)
    # metrics and health
    metrics_bind: str | None = None  # HOST:PORT or unix:PATH for /metrics, /healthz, /readyz
    statsd_host: str | None = None  # HOST:PORT or unix:PATH: gunicorn's statsd metric names
    statsd_prefix: str = ""
    reload_include: list[str] = field(default_factory=list)  # glob patterns watched besides *.py
    reload_exclude: list[str] = field(default_factory=list)  # glob patterns never watched
    preload: bool = False  # import the app in the supervisor, before forking the workers
    # the process
    chdir: str | None = None  # change to this directory before loading the app
    pythonpath: list[str] = field(default_factory=list)  # directories put first on sys.path
    pidfile: str | None = None  # write the server's pid here (removed on exit)
    env: list[str] = field(default_factory=list)  # KEY=VALUE set in the environment
    env_file: str | None = None  # a .env file (variables already set win)
    sendfile: bool = True  # wsgi.file_wrapper over a regular file: os.sendfile on plain TCP
    # logging
    log_level: str = "info"
    access_log: bool = True
    access_log_format: str | None = None  # gunicorn atoms or common/combined; None: combined
    access_logfile: str | None = None  # "-" or None: stdout
    error_logfile: str | None = None  # None: stderr
    log_json: bool = False
    log_config: str | None = None  # a logging config file (dictConfig .json/.toml, or ini)

    @property
    def limits(self) -> Limits:
        return Limits(
            max_request_line=self.max_request_line,
            max_header_count=self.max_header_count,
            max_header_size=self.max_header_size,
            max_body_size=self.max_body_size,
        )

    @property
    def h2_limits(self) -> Any:
        """The HTTP/2 protocol's limits (``protocols.h2.H2Limits``)."""
        from ..protocols.h2 import H2Limits

        return H2Limits(
            max_concurrent_streams=self.h2_max_concurrent_streams,
            max_header_list_size=self.h2_max_header_list_size,
            header_table_size=self.h2_header_table_size,
            initial_window_size=self.h2_initial_window_size,
            connection_window_size=self.h2_connection_window_size,
            max_body_size=self.max_body_size,
            idle_timeout=self.h2_idle_timeout,
            ping_timeout=self.h2_ping_timeout,
            window_timeout=self.h2_window_timeout,
            body_timeout=self.body_timeout or None,
            body_min_rate=self.body_min_rate,
        )

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        """Refuse settings that cannot work, naming the setting; returns self."""
        from ..server.proxy import TrustedPeers
        from .accesslog import resolve_format

        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        for name in ("max_requests", "max_requests_jitter", "backlog"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("keepalive_timeout", "header_timeout", "body_timeout", "graceful_timeout",
                     "drain_grace"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("ws_max_message_size", "max_websockets"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("ws_ping_interval", "ws_ping_timeout", "ws_idle_timeout", "ws_timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"loop must be auto, asyncio or uvloop, not {self.loop!r}")
        if self.log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"log_level must be critical, error, warning, info or debug, not {self.log_level!r}")
        if self.url_scheme not in ("http", "https"):
            raise ValueError(f"url_scheme must be http or https, not {self.url_scheme!r}")
        if self.h2_max_concurrent_streams < 1:
            raise ValueError("h2_max_concurrent_streams must be at least 1")
        if self.h2_max_header_list_size < 1024:
            raise ValueError("h2_max_header_list_size must be at least 1024")
        if self.h2_header_table_size < 0:
            raise ValueError("h2_header_table_size must not be negative")
        for name in ("h2_initial_window_size", "h2_connection_window_size"):
            if not 1024 <= getattr(self, name) <= 2**31 - 1:
                raise ValueError(f"{name} must be between 1024 and 2**31-1")
        if self.forwarded_headers not in ("x-forwarded", "forwarded"):
            raise ValueError(f"forwarded_headers must be x-forwarded or forwarded, not {self.forwarded_headers!r}")
        for name in ("max_buffered_size", "body_min_rate"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.keyfile and not self.certfile:
            raise ValueError("keyfile given without certfile")
        for entry in self.env:
            if "=" not in entry or not entry.split("=", 1)[0]:
                raise ValueError(f"env {entry!r}: want KEY=VALUE")
        if self.preload and self.reload:
            raise ValueError("preload and reload do not go together: the supervisor would keep "
                             "the code it imported; drop preload while developing")
        if self.chdir and not os.path.isdir(self.chdir):
            raise ValueError(f"chdir {self.chdir}: no such directory")
        if self.env_file and not os.path.isfile(self.env_file):
            raise ValueError(f"env_file {self.env_file}: no such file")
        from ..server.listeners import parse_bind

        for bind in self.bind:
            parse_bind(bind)  # BindError (a ValueError) names the bind and the problem
        TrustedPeers(self.forwarded_allow_ips)
        if self.metrics_bind:
            import importlib.util

            parse_bind(self.metrics_bind)
            if importlib.util.find_spec("prometheus_client") is None:
                raise ValueError("metrics_bind needs prometheus_client: pip install 'wsgiplus[metrics]'")
        if self.statsd_host and not self.statsd_host.startswith("unix:"):
            host, sep, port = self.statsd_host.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"statsd_host must be HOST:PORT or unix:PATH, not {self.statsd_host!r}")
        resolve_format(self.access_log_format)
        return self

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}
