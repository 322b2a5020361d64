"""Metrics and health: Prometheus (``prometheus_client``), statsd, ``/healthz`` and ``/readyz``.

The request path pays for one call where a request finishes (``Server.access``
-> ``RequestStats.observe``): a dict increment and a bucket increment, on the
loop thread, no lock. Everything else is read when it is asked for:

- one process (``--workers 1``): a pull collector reads the server's counters
  (in flight, suspended, pool, connections, bytes) at scrape time, on the loop
  thread that owns them;
- ``--workers N``: each worker copies its counters into prometheus_client's
  multiprocess files once a second (and as it stops); the supervisor serves
  the scrape, aggregating the files of every worker, live and dead (counters
  keep what dead workers counted; their gauges are dropped);
- gunicorn worker: each worker serves the listener (``SO_REUSEPORT``) and,
  with ``PROMETHEUS_MULTIPROC_DIR`` set, aggregates every worker's files.

The listener (``--metrics-bind``) is separate from the app's, off by default,
and answers ``GET /metrics``, ``/healthz`` (200 while the process runs) and
``/readyz`` (200 while serving, 503 from the moment a graceful stop begins,
so a load balancer drains the instance before its connections close).
prometheus_client is imported only when the listener is on (extra ``[metrics]``).
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("wsgiplus.error")

__all__ = [
    "BUCKETS",
    "METRIC_NAMES",
    "RequestStats",
    "StatsdClient",
    "StatusListener",
]

# request duration histogram buckets, seconds (suspensions included)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# a method label is one of these or "other": a client must not grow the label set
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"))

METRIC_NAMES = {
    "wsgiplus_requests_total": "counter: finished requests, by method and status",
    "wsgiplus_request_duration_seconds": "histogram: request duration, suspensions included",
    "wsgiplus_rejected_total": "counter: requests the server answered itself (malformed, too large, "
                               "too slow, too many connections), by status; they never reach the app",
    "wsgiplus_requests_in_flight": "gauge: requests handed to the app and not finished",
    "wsgiplus_requests_suspended": "gauge: requests suspended on a future now",
    "wsgiplus_pool_threads": "gauge: pool threads",
    "wsgiplus_pool_threads_busy": "gauge: pool threads running an app step now",
    "wsgiplus_pool_queue_depth": "gauge: app steps waiting for a pool thread",
    "wsgiplus_connections_open": "gauge: open client connections",
    "wsgiplus_received_bytes_total": "counter: bytes received from clients",
    "wsgiplus_sent_bytes_total": "counter: bytes sent to clients",
    "wsgiplus_ready": "gauge: 1 while serving, 0 once a graceful stop has begun",
    "wsgiplus_workers": "gauge: worker processes serving: ready, not stopping (supervisor)",
    "wsgiplus_worker_restarts_total": "counter: workers started to replace another (supervisor)",
}


def _status_of(exchange: Any) -> int:
    """The status code of a finished ``Runner`` (``framer``, ``status`` text) or an exchange
    record (``status`` an int); 0 when nothing was sent."""
    framer = getattr(exchange, "framer", None)
    if framer is not None:
        return framer.status_code
    status = exchange.status
    if isinstance(status, int):
        return status
    return int(status[:3]) if status and status[:3].isdigit() else 0


class RequestStats:
    """Per-server request counters, bumped once per finished request (loop thread only)."""

    __slots__ = ("requests", "rejections", "buckets", "duration_sum", "statsd")

    def __init__(self, statsd: StatsdClient | None = None) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.rejections: dict[int, int] = {}  # status -> count, answered without the app
        self.buckets = [0] * (len(BUCKETS) + 1)  # not cumulative; the last is +Inf
        self.duration_sum = 0.0
        self.statsd = statsd

    def observe(self, runner: Any) -> None:
        """The hook: ``Server.access`` calls this for every finished request.

        ``runner`` is what ``access`` is given: a ``Runner`` (``method``, ``started_at``,
        ``framer``/``status``), or any record with ``method``, ``status``, ``started_at``
        and ``ended_at``.
        """
        ended = getattr(runner, "ended_at", None)
        duration = (ended if ended is not None else time.monotonic()) - runner.started_at
        method = runner.method
        if method not in METHODS:
            method = "other"
        key = (method, _status_of(runner))
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration
        if self.statsd is not None:
            self.statsd.request(key[1], duration)

    def rejected(self, status: int) -> None:
        """A request the server refused itself (``HTTPConnection._send_error``)."""
        self.rejections[status] = self.rejections.get(status, 0) + 1


def _live_values(server: Any) -> dict[str, float]:
    """The server's gauges and byte counters, read now (on the loop thread)."""
    pool = server.pool
    return {
        "wsgiplus_requests_in_flight": server.active,
        "wsgiplus_requests_suspended": server.suspensions.count,
        "wsgiplus_pool_threads": pool.size if pool is not None else 0,
        "wsgiplus_pool_threads_busy": pool.busy() if pool is not None else 0,
        "wsgiplus_pool_queue_depth": pool.queued() if pool is not None else 0,
        "wsgiplus_connections_open": len(server.connections),
        "wsgiplus_ready": 0 if server.stopping else 1,
    }


_GAUGES = ("wsgiplus_requests_in_flight", "wsgiplus_requests_suspended", "wsgiplus_pool_threads",
           "wsgiplus_pool_threads_busy", "wsgiplus_pool_queue_depth", "wsgiplus_connections_open",
           "wsgiplus_ready")


class PullCollector:
    """A prometheus_client collector that reads one server at scrape time."""

    def __init__(self, server: Any, stats: RequestStats) -> None:
        self.server, self.stats = server, stats

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        stats = self.stats
        requests = CounterMetricFamily("wsgiplus_requests", METRIC_NAMES["wsgiplus_requests_total"],
                                       labels=("method", "status"))
        for (method, status), n in sorted(stats.requests.items()):
            requests.add_metric((method, str(status)), n)
        yield requests
        rejected = CounterMetricFamily("wsgiplus_rejected", METRIC_NAMES["wsgiplus_rejected_total"],
                                       labels=("status",))
        for status, n in sorted(stats.rejections.items()):
            rejected.add_metric((str(status),), n)
        yield rejected
        cumulative, total = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), stats.buckets, strict=True):
            total += n
            cumulative.append((_bound(bound), total))
        yield HistogramMetricFamily("wsgiplus_request_duration_seconds",
                                    METRIC_NAMES["wsgiplus_request_duration_seconds"],
                                    buckets=cumulative, sum_value=stats.duration_sum)
        for name, value in _live_values(self.server).items():
            yield GaugeMetricFamily(name, METRIC_NAMES[name], value=value)
        yield CounterMetricFamily("wsgiplus_received_bytes", METRIC_NAMES["wsgiplus_received_bytes_total"],
                                  value=self.server.bytes_in)
        yield CounterMetricFamily("wsgiplus_sent_bytes", METRIC_NAMES["wsgiplus_sent_bytes_total"],
                                  value=self.server.bytes_out)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class MultiprocessExporter:
    """Copies one worker's counters into prometheus_client's multiprocess files.

    Called once a second on the loop thread (and as the worker stops), so the
    request path never touches an mmap or a lock. Gauges are ``livesum``: a dead
    worker's drop out once the supervisor marks it dead.
    """

    def __init__(self, server: Any, stats: RequestStats) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.server, self.stats = server, stats
        self.requests = Counter("wsgiplus_requests", METRIC_NAMES["wsgiplus_requests_total"],
                                ("method", "status"), registry=None)
        self.duration = Histogram("wsgiplus_request_duration_seconds",
                                  METRIC_NAMES["wsgiplus_request_duration_seconds"], buckets=BUCKETS,
                                  registry=None)
        # readiness is the supervisor's to say, not a sum over workers
        self.gauges = {name: Gauge(name, METRIC_NAMES[name], registry=None, multiprocess_mode="livesum")
                       for name in _GAUGES if name != "wsgiplus_ready"}
        self.bytes_in = Counter("wsgiplus_received_bytes", METRIC_NAMES["wsgiplus_received_bytes_total"],
                                registry=None)
        self.bytes_out = Counter("wsgiplus_sent_bytes", METRIC_NAMES["wsgiplus_sent_bytes_total"],
                                 registry=None)
        self.rejected = Counter("wsgiplus_rejected", METRIC_NAMES["wsgiplus_rejected_total"], ("status",),
                                registry=None)
        self._requests: dict[tuple[str, int], int] = {}
        self._rejections: dict[int, int] = {}
        self._buckets = [0] * len(stats.buckets)
        self._sum = 0.0
        self._in = self._out = 0

    def flush(self) -> None:
        stats, server = self.stats, self.server
        live = _live_values(server)
        for key, n in list(stats.requests.items()):
            done = self._requests.get(key, 0)
            if n > done:
                self.requests.labels(key[0], str(key[1])).inc(n - done)
                self._requests[key] = n
        for status, n in list(stats.rejections.items()):
            done = self._rejections.get(status, 0)
            if n > done:
                self.rejected.labels(str(status)).inc(n - done)
                self._rejections[status] = n
        # the histogram's own bucket values: observe() per request would cost a lock and
        # an mmap write on the request path
        for i, n in enumerate(stats.buckets):
            if n > self._buckets[i]:
                self.duration._buckets[i].inc(n - self._buckets[i])
                self._buckets[i] = n
        if stats.duration_sum > self._sum:
            self.duration._sum.inc(stats.duration_sum - self._sum)
            self._sum = stats.duration_sum
        for name, gauge in self.gauges.items():
            gauge.set(live[name])
        if server.bytes_in > self._in:
            self.bytes_in.inc(server.bytes_in - self._in)
            self._in = server.bytes_in
        if server.bytes_out > self._out:
            self.bytes_out.inc(server.bytes_out - self._out)
            self._out = server.bytes_out


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def render_metrics(registry: Any) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def multiprocess_registry(path: str, *extra: Any) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    for collector in extra:
        registry.register(collector)
    return registry


# -- the listener ----------------------------------------------------------------------------

Watch = Callable[[int, str, Callable[[], None]], None]  # (fd, "r" or "w", callback)
MAX_CONNECTIONS = 32
MAX_HEAD = 8192
CONNECTION_DEADLINE = 10.0


class StatusListener:
    """A small non-blocking HTTP/1.0 responder for ``/metrics``, ``/healthz``, ``/readyz``.

    Driven by whatever loop owns it: ``watch(fd, "r"|"w", callback)`` and
    ``unwatch(fd)`` are asyncio's ``add_reader``/``add_writer`` in a worker and
    a selector in the supervisor, so no thread is started (a thread in the
    supervisor would be forked into every worker mid-lock). Call ``sweep()``
    about once a second: it closes connections older than 10 s. At most 32
    connections; requests are read up to 8 KiB of head, answered, closed.
    """

    def __init__(self, sock: socket.socket, metrics: Callable[[], tuple[bytes, str]],
                 ready: Callable[[], bool], watch: Watch, unwatch: Callable[[int], None]) -> None:
        self.sock = sock
        self.metrics, self.ready = metrics, ready
        self._watch, self._unwatch = watch, unwatch
        self.conns: dict[int, tuple[socket.socket, bytearray, float]] = {}
        self._out: dict[int, memoryview] = {}
        self._writing: set[int] = set()
        sock.setblocking(False)
        watch(sock.fileno(), "r", self._accept)

    @property
    def address(self) -> str:
        from ..server.listeners import describe

        return describe(self.sock)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("metrics listener: accept failed: %s", exc)
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                conn.close()
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            self.conns[fd] = (conn, bytearray(), time.monotonic())
            self._watch(fd, "r", lambda fd=fd: self._read(fd))

    def _read(self, fd: int) -> None:
        entry = self.conns.get(fd)
        if entry is None:
            return
        conn, buf, _ = entry
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                try:  # what is already here, so the close is not a reset that eats the answer
                    for _ in range(16):
                        if not conn.recv(65536):
                            break
                except OSError:
                    pass
                self._respond(fd, 431, "text/plain", b"request head too large\n")
            return
        head = bytes(buf[:end])
        status, ctype, body = self.route(head)
        self._respond(fd, status, ctype, body, head_only=head.startswith(b"HEAD "))

    def route(self, head: bytes) -> tuple[int, str, bytes]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        if target == "/metrics":
            try:
                body, ctype = self.metrics()
            except Exception:
                log.exception("metrics: rendering failed")
                return 500, "text/plain", b"metrics failed\n"
            return 200, ctype, body
        if target in ("/healthz", "/livez"):
            return 200, "text/plain", b"ok\n"
        if target == "/readyz":
            return (200, "text/plain", b"ready\n") if self.ready() else (503, "text/plain", b"stopping\n")
        return 404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n"

    def _respond(self, fd: int, status: int, ctype: str, body: bytes, head_only: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large", 500: "Internal Server Error",
                  503: "Service Unavailable"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode("latin-1")
        self._unwatch(fd)
        self._out[fd] = memoryview(head if head_only else head + body)
        self._write(fd)

    def _write(self, fd: int) -> None:
        entry, out = self.conns.get(fd), self._out.get(fd)
        if entry is None or out is None:
            return
        try:
            sent = entry[0].send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(fd)
            return
        if sent == len(out):
            self._close(fd)
            return
        self._out[fd] = out[sent:]
        if fd not in self._writing:  # the rest when the socket is writable again
            self._writing.add(fd)
            self._watch(fd, "w", lambda: self._write(fd))

    def _close(self, fd: int) -> None:
        entry = self.conns.pop(fd, None)
        self._out.pop(fd, None)
        self._writing.discard(fd)
        if entry is not None:
            self._unwatch(fd)
            entry[0].close()

    def sweep(self) -> None:
        now = time.monotonic()
        for fd, (_, _, since) in list(self.conns.items()):
            if now - since > CONNECTION_DEADLINE:
                self._close(fd)

    def close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        self._unwatch(self.sock.fileno())
        self.sock.close()


def asyncio_watchers(loop: Any) -> tuple[Watch, Callable[[int], None]]:
    """``watch``/``unwatch`` for a ``StatusListener`` on an asyncio (or uvloop) loop."""

    def watch(fd: int, kind: str, callback: Callable[[], None]) -> None:
        (loop.add_reader if kind == "r" else loop.add_writer)(fd, callback)

    def unwatch(fd: int) -> None:
        loop.remove_reader(fd)
        loop.remove_writer(fd)

    return watch, unwatch


def bind_metrics_socket(bind: str, reuse_port: bool = False) -> socket.socket:
    from ..server.listeners import bind_socket, parse_bind

    if not reuse_port or parse_bind(bind)[0] != "tcp":
        return bind_socket(bind, 64)
    _, host, port = parse_bind(bind)
    family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((str(host), int(port or 0)))
    sock.listen(64)
    sock.setblocking(False)
    return sock


# -- statsd -----------------------------------------------------------------------------------


class StatsdClient:
    """gunicorn's statsd metric names: ``gunicorn.requests``, ``gunicorn.request.status.<code>``,
    ``gunicorn.request.duration`` (ms), ``gunicorn.workers``, ``gunicorn.log.<level>``.

    One datagram per finished request (the three lines together); a send that
    fails is dropped, never raised into the request path.
    """

    def __init__(self, host: str, prefix: str = "") -> None:
        self.prefix = f"{prefix.rstrip('.')}." if prefix else ""
        if host.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address: Any = host[5:]
        else:
            name, _, port = host.rpartition(":")
            name = name.strip("[]") or "127.0.0.1"
            family = socket.AF_INET6 if ":" in name else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            address = (name, int(port or 8125))
        self.sock.setblocking(False)
        try:
            self.sock.connect(address)
        except OSError as exc:
            log.warning("statsd: cannot reach %s: %s", host, exc)
        p = self.prefix
        self._requests = f"{p}gunicorn.requests:1|c|@1.0\n{p}gunicorn.request.status.".encode()
        self._duration = f"{p}gunicorn.request.duration:".encode()

    def request(self, status: int, duration: float) -> None:
        self._send(b"%b%d:1|c|@1.0\n%b%.3f|ms" % (self._requests, status, self._duration, duration * 1000))

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{self.prefix}{name}:{value}|g".encode())

    def increment(self, name: str, value: int = 1) -> None:
        self._send(f"{self.prefix}{name}:{value}|c|@1.0".encode())

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class StatsdLogHandler(logging.Handler):
    """Counts warning/error/critical log records as ``gunicorn.log.<level>``, as gunicorn does."""

    def __init__(self, client: StatsdClient) -> None:
        super().__init__(logging.WARNING)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        level = "exception" if record.exc_info else record.levelname.lower()
        self.client.increment(f"gunicorn.log.{level}")


def statsd_from_config(config: Any) -> StatsdClient | None:
    host = getattr(config, "statsd_host", None)
    if not host:
        return None
    client = StatsdClient(host, getattr(config, "statsd_prefix", "") or "")
    logging.getLogger("wsgiplus").addHandler(StatsdLogHandler(client))
    return client


class _Registered:
    """Every collector of another registry, as one collector."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        return self.registry.collect()


class _ReadyCollector:
    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("wsgiplus_ready", METRIC_NAMES["wsgiplus_ready"], value=int(not self.server.stopping))


# -- in a worker ------------------------------------------------------------------------------


class WorkerMetrics:
    """What one worker runs for metrics: the hook, the exporter or the listener, the tick."""

    def __init__(self, server: Any, config: Any, loop: Any, *, listener_sock: socket.socket | None = None,
                 multiprocess: bool = False) -> None:
        self.server, self.loop = server, loop
        self.statsd = statsd_from_config(config)
        self.stats = server.metrics = RequestStats(self.statsd)
        self.exporter: MultiprocessExporter | None = None
        self.listener: StatusListener | None = None
        self._tick: Any = None
        path = multiprocess_dir()
        if multiprocess and path:
            self.exporter = MultiprocessExporter(server, self.stats)
        self._unix_file = None
        if listener_sock is not None and listener_sock.family == socket.AF_UNIX:
            from ..server.listeners import unix_socket_file

            self._unix_file = unix_socket_file(listener_sock)
        if listener_sock is not None:
            if path and multiprocess:
                registry = multiprocess_registry(path, _ReadyCollector(server))
            else:
                from prometheus_client import REGISTRY, CollectorRegistry

                registry = CollectorRegistry()
                registry.register(PullCollector(server, self.stats))
                # prometheus_client's default registry too: process_* and python_* metrics,
                # and the app's own metrics if it makes any
                registry.register(_Registered(REGISTRY))
            watch, unwatch = asyncio_watchers(loop)
            self.listener = StatusListener(listener_sock, lambda: self._render(registry),
                                           lambda: not server.stopping, watch, unwatch)
            log.info("metrics on http://%s/metrics (and /healthz, /readyz)", self.listener.address)
        if self.exporter is not None or self.listener is not None:
            self._tick = loop.call_later(1.0, self.tick)

    def _render(self, registry: Any) -> tuple[bytes, str]:
        if self.exporter is not None:
            self.exporter.flush()  # this worker's own numbers as of now
        return render_metrics(registry)

    def tick(self) -> None:
        if self.exporter is not None:
            self.exporter.flush()
        if self.listener is not None:
            self.listener.sweep()
        self._tick = self.loop.call_later(1.0, self.tick)

    def stop_listening(self) -> None:
        """Under gunicorn: stop taking scrapes (the other workers answer)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self.exporter is not None:
            self.exporter.flush()
        self.stop_listening()
        if self._unix_file is not None:
            from ..server.listeners import unlink_unix_socket

            try:
                unlink_unix_socket(*self._unix_file)
            except OSError:
                pass
        if self.statsd is not None:
            self.statsd.close()


# -- in the supervisor -------------------------------------------------------------------------


class SupervisorCollector:
    """The supervisor's own numbers: workers serving, restarts, readiness."""

    def __init__(self, supervisor: Any, ready: Callable[[], bool]) -> None:
        self.supervisor, self.ready = supervisor, ready

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        yield GaugeMetricFamily("wsgiplus_workers", METRIC_NAMES["wsgiplus_workers"],
                                value=sum(1 for w in sup.workers.values() if w.ready and not w.stopping))
        restarts = CounterMetricFamily("wsgiplus_worker_restarts", METRIC_NAMES["wsgiplus_worker_restarts_total"],
                                       labels=("reason",))
        for reason, n in sorted(sup.restarts.items()):
            restarts.add_metric((reason,), n)
        yield restarts
        yield GaugeMetricFamily("wsgiplus_ready", METRIC_NAMES["wsgiplus_ready"], value=int(self.ready()))


class SupervisorMetrics:
    """``--metrics-bind`` and ``--statsd-host`` under the supervisor.

    Sets up ``PROMETHEUS_MULTIPROC_DIR`` before any worker is forked (a fresh
    temporary directory, removed at exit; or the one given in the environment,
    emptied of stale ``*.db`` files), marks dead workers dead, and serves the
    listener from the supervisor's own selector loop.
    """

    def __init__(self, supervisor: Any, selector: Any) -> None:
        config = supervisor.config
        self.supervisor, self.selector = supervisor, selector
        self.listener: StatusListener | None = None
        self.path: str | None = None
        self._own_dir = False
        self._unix_file: tuple[str, tuple[int, int] | None] | None = None
        self._next_gauge = 0.0
        self.statsd = statsd_from_config(config)
        if config.metrics_bind:
            self.path = self._prepare_dir()
            sock = bind_metrics_socket(config.metrics_bind)
            os.set_inheritable(sock.fileno(), False)
            if sock.family == socket.AF_UNIX:
                from ..server.listeners import unix_socket_file

                self._unix_file = unix_socket_file(sock)
            registry = multiprocess_registry(self.path, SupervisorCollector(supervisor, self.ready))
            self.listener = StatusListener(sock, lambda: render_metrics(registry), self.ready,
                                           self._watch, self._unwatch)
            log.info("metrics on http://%s/metrics (and /healthz, /readyz); workers write to %s",
                     self.listener.address, self.path)

    def _prepare_dir(self) -> str:
        import glob
        import tempfile

        path = multiprocess_dir()
        if path:
            os.makedirs(path, exist_ok=True)
            for stale in glob.glob(os.path.join(path, "*.db")):
                os.remove(stale)
        else:
            path = tempfile.mkdtemp(prefix="wsgiplus-metrics-")
            self._own_dir = True
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # in case it was imported before the variable was set
        return path

    def _watch(self, fd: int, kind: str, callback: Callable[[], None]) -> None:
        import selectors

        self.selector.register(fd, selectors.EVENT_READ if kind == "r" else selectors.EVENT_WRITE, callback)

    def _unwatch(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def ready(self) -> bool:
        """Serving and not stopping; during a reload the old workers serve until the new ones do."""
        sup = self.supervisor
        return not sup.stopping and any(w.ready and not w.stopping for w in sup.workers.values())

    def stopping(self) -> None:
        log.info("readiness: not ready (stopping)")

    def worker_gone(self, pid: int) -> None:
        if self.path is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.path)

    def tick(self) -> None:
        if self.listener is not None:
            self.listener.sweep()
        now = time.monotonic()
        if self.statsd is not None and now >= self._next_gauge:
            self._next_gauge = now + 1.0
            self.statsd.gauge("gunicorn.workers", len(self.supervisor.serving()))

    def in_child(self) -> None:
        """In a freshly forked worker: drop the supervisor's sockets (the selector is gone)."""
        if self.listener is not None:
            for conn, _, _ in self.listener.conns.values():
                conn.close()
            self.listener.sock.close()
            self.listener = None
        if self.statsd is not None:
            wsgiplus = logging.getLogger("wsgiplus")
            for handler in list(wsgiplus.handlers):
                if isinstance(handler, StatsdLogHandler) and handler.client is self.statsd:
                    wsgiplus.removeHandler(handler)
            self.statsd.close()
            self.statsd = None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self._unix_file is not None:
            from ..server.listeners import unlink_unix_socket

            try:
                unlink_unix_socket(*self._unix_file)
            except OSError:
                pass
        if self._own_dir and self.path:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
        if self.statsd is not None:
            self.statsd.close()
