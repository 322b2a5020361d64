"""The process model: one supervisor, N forked workers sharing the listening sockets.

The supervisor opens the sockets once and never closes them while it runs,
so a connection is never refused during a restart: it waits in the kernel's
accept queue until some worker takes it. Workers import the app after the
fork (the supervisor never does), so a new worker runs the code on disk.

Replacing a worker - SIGHUP, ``--max-requests``, ``--reload`` - starts the new
one first; the old one is told to stop only once the new one listens. A
stopping worker stops accepting and lets every request it has (suspended ones
included) finish within ``graceful_timeout``.

Signals to the supervisor: TERM/INT graceful stop (a second one: quick stop),
QUIT quick stop, HUP replace every worker, TTIN one worker more, TTOU one
fewer. A worker that dies is replaced. Worker -> supervisor messages go over a
pipe per worker: ``R`` (listening) and ``Q`` (please replace me).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .config import Config
from .importer import AppImportError, import_app
from .listeners import bind_socket, describe, socket_from_fd, unix_socket_file, unlink_unix_socket
from .server import Server, new_event_loop

log = logging.getLogger("wsgiplus.error")

__all__ = ["BOOT_ERROR", "Supervisor", "WorkerServer", "load_app", "run", "run_worker"]

BOOT_ERROR = 3  # a worker's exit status when the app cannot be imported (as gunicorn's)
KILL_MARGIN = 10.0  # beyond graceful_timeout, before SIGKILL (the worker's own pool wait is 5 s)
MSG_READY = b"R"
MSG_REPLACE = b"Q"


# -- inside a worker -----------------------------------------------------------


class WorkerServer(Server):
    """``Server`` that counts finished requests, so a worker can ask to be recycled.

    ``on_max_requests`` is called once, on the loop thread, when ``max_requests``
    requests have finished.
    """

    def __init__(self, app: Callable[..., Any], config: Config, *, max_requests: int = 0,
                 on_max_requests: Callable[[], None] | None = None) -> None:
        super().__init__(app, config)
        self.max_requests = max_requests
        self.on_max_requests = on_max_requests
        self.requests_done = 0

    def access(self, conn: Any, record: Any) -> None:
        self.requests_done += 1
        super().access(conn, record)
        if self.requests_done == self.max_requests and self.on_max_requests is not None:
            log.info("worker %d: served %d requests (max_requests); asking for a replacement",
                     os.getpid(), self.requests_done)
            self.on_max_requests()


def load_app(config: Config) -> Callable[..., Any]:
    """The WSGI app named by ``config.app`` (imported now), or the callable given."""
    app = config.app
    if app is None:
        raise AppImportError("no app given")
    if isinstance(app, str):
        return import_app(app, factory=config.factory)
    return app() if config.factory else app


def _failed_app(text: str) -> Callable[..., Any]:
    """With --reload, an app that does not import answers 500 with why, until the file is fixed."""
    body = f"wsgiplus: the app failed to load (fix it; --reload is watching)\n\n{text}".encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def run_worker(config: Config, sockets: list[socket.socket] | None, status_fd: int | None = None,
               app: Callable[..., Any] | None = None) -> int:
    """Serve ``config.app`` on ``sockets`` until told to stop; return the exit status.

    ``sockets`` None: bind ``config.bind`` here. ``status_fd`` is the pipe to the
    supervisor (None when running in-process).
    """
    pid = os.getpid()
    watcher = None
    if config.reload:  # look at the files before importing them, so no edit slips between
        from .reload import FileWatcher

        watcher = FileWatcher(config.reload_dirs or [os.getcwd()])
    try:
        app = app if app is not None else load_app(config)
    except Exception as exc:  # the app's import error, whatever it is
        if not config.reload:
            log.error("worker %d: cannot load the app %r", pid, config.app, exc_info=exc)
            return BOOT_ERROR
        log.error("worker %d: cannot load the app %r; serving the error until a file changes",
                  pid, config.app, exc_info=exc)
        filename = getattr(exc, "filename", None)
        if isinstance(filename, str) and watcher is not None:
            watcher.add_file(filename)
        app = _failed_app("".join(traceback.format_exception(exc)))
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve_worker(config, sockets, status_fd, app, watcher))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def _serve_worker(config: Config, sockets: list[socket.socket] | None, status_fd: int | None,
                        app: Callable[..., Any], watcher: Any) -> int:
    loop = asyncio.get_running_loop()
    pid, ppid = os.getpid(), os.getppid()
    asked: list[str] = []
    quick: list[bool] = []

    def tell(msg: bytes) -> None:
        if status_fd is None:
            return
        try:
            os.write(status_fd, msg)
        except OSError:  # the supervisor is gone; the parent watch below stops us
            pass

    def ask_replacement(reason: str) -> None:
        if asked:
            return
        asked.append(reason)
        if status_fd is None:  # nobody to replace us: just stop
            server.request_stop()
        else:
            tell(MSG_REPLACE)

    max_requests = 0
    if config.max_requests > 0:
        max_requests = config.max_requests + random.randint(0, max(0, config.max_requests_jitter))
    server = WorkerServer(app, config, max_requests=max_requests,
                          on_max_requests=lambda: ask_replacement("max_requests"))
    await server.start(sockets)
    metrics = None
    if config.metrics_bind or config.statsd_host:
        from .metrics import WorkerMetrics, bind_metrics_socket

        # in one process the worker serves the listener; under a supervisor, the supervisor does
        listener = bind_metrics_socket(config.metrics_bind) if config.metrics_bind and status_fd is None else None
        metrics = WorkerMetrics(server, config, loop, listener_sock=listener,
                                multiprocess=status_fd is not None and bool(config.metrics_bind))
    tell(MSG_READY)

    def stop(fast: bool) -> None:
        if fast:
            quick.append(True)
        server.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, False)
    loop.add_signal_handler(signal.SIGQUIT, stop, True)

    def watch_parent() -> None:
        if status_fd is not None and os.getppid() != ppid:
            log.warning("worker %d: the supervisor (pid %d) is gone; stopping", pid, ppid)
            server.request_stop()
            return
        loop.call_later(1.0, watch_parent)

    watch_parent()
    if status_fd is None:  # in-process: nobody to start new workers
        loop.add_signal_handler(signal.SIGHUP, log.warning,
                                "SIGHUP ignored: reloading code needs the supervisor (--workers 2+ or --reload)")
    stop_watching = None
    if watcher is not None:
        from .reload import start_watching

        def changed(path: str) -> None:
            log.info("worker %d: %s changed; reloading", pid, path)
            loop.call_soon_threadsafe(ask_replacement, "reload")

        stop_watching = start_watching(watcher, changed)
    await server.wait_stopped()
    if stop_watching is not None:
        stop_watching.set()
    timeout = 0.0 if quick else config.graceful_timeout
    log.info("worker %d: stopping (%d requests in flight, graceful timeout %ss)", pid, server.active, timeout)
    await server.shutdown(timeout)
    if metrics is not None:
        metrics.close()
    log.info("worker %d: stopped after %d requests", pid, server.requests_done)
    return 0


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(0)


# -- the supervisor ------------------------------------------------------------


class WorkerProcess:
    """The supervisor's record of one worker."""

    def __init__(self, pid: int, status_fd: int, replaces: int | None) -> None:
        self.pid = pid
        self.status_fd = status_fd
        self.replaces = replaces  # pid of the worker to stop once this one listens
        self.replaced_by: int | None = None
        self.ready = False
        self.stopping = False
        self.kill_at: float | None = None
        self.started = time.monotonic()


class Supervisor:
    """Forks and watches the workers. ``run()`` returns the exit status."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
               signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)

    def __init__(self, config: Config, app: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.app = app if app is not None and not isinstance(app, str) else None
        self.target = config.workers
        self.workers: dict[int, WorkerProcess] = {}
        self.sockets: list[socket.socket] = []
        self.unix_paths: list[tuple[str, tuple[int, int] | None]] = []
        self.stopping = False
        self.exit_status = 0
        self.signals: list[int] = []
        self.selector = selectors.DefaultSelector()
        self.spawn_not_before = 0.0
        self.backoff = 1.0
        self._wake_r, self._wake_w = os.pipe()
        self.restarts: dict[str, int] = {"replaced": 0, "died": 0}  # workers started to replace one
        self.metrics: Any = None  # a SupervisorMetrics with --metrics-bind / --statsd-host

    # -- setup ----------------------------------------------------------

    def open_sockets(self) -> None:
        config = self.config
        self.sockets = [socket_from_fd(fd) for fd in config.fds]
        for bind in config.bind:
            sock = bind_socket(bind, config.backlog)
            self.sockets.append(sock)
            if sock.family == socket.AF_UNIX:
                self.unix_paths.append(unix_socket_file(sock))
        for sock in self.sockets:
            os.set_inheritable(sock.fileno(), False)
        if config.metrics_bind or config.statsd_host:
            from .metrics import SupervisorMetrics

            self.metrics = SupervisorMetrics(self, self.selector)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in self.HANDLED:
            signal.signal(sig, self._on_signal)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    # -- workers ----------------------------------------------------------

    def spawn(self, replaces: int | None = None) -> WorkerProcess | None:
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            log.error("cannot fork a worker: %s", exc)
            self.spawn_not_before = time.monotonic() + self.backoff
            return None
        if pid == 0:
            os.close(read_fd)
            self._child(write_fd)  # never returns
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = WorkerProcess(pid, read_fd, replaces)
        self.workers[pid] = worker
        self.selector.register(read_fd, selectors.EVENT_READ, worker)
        if replaces is not None and replaces in self.workers:
            self.workers[replaces].replaced_by = pid
            self.restarts["replaced"] += 1
        log.info("booting worker pid %d%s", pid, f" (to replace pid {replaces})" if replaces else "")
        return worker

    def _child(self, status_fd: int) -> None:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in self.HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
                signal.signal(sig, signal.SIG_IGN)  # the supervisor's business, not a worker's
            signal.signal(signal.SIGQUIT, _exit_now)  # until the loop installs its handlers
            self.selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            for other in self.workers.values():
                try:
                    os.close(other.status_fd)
                except OSError:
                    pass
            if self.metrics is not None:
                self.metrics.in_child()
            status = run_worker(self.config, self.sockets, status_fd, self.app)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
            status = 1
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def stop_worker(self, worker: WorkerProcess, sig: int = signal.SIGTERM) -> None:
        if not worker.stopping:
            worker.stopping = True
            grace = 0.0 if sig == signal.SIGQUIT else self.config.graceful_timeout
            worker.kill_at = time.monotonic() + grace + KILL_MARGIN
        elif sig == signal.SIGQUIT:
            worker.kill_at = min(worker.kill_at or 0.0, time.monotonic() + KILL_MARGIN)
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def replace(self, worker: WorkerProcess) -> None:
        if self.stopping or worker.stopping or worker.replaced_by is not None:
            return
        self.spawn(replaces=worker.pid)

    def serving(self) -> list[WorkerProcess]:
        """Workers that count towards the target: not stopping, not about to be replaced."""
        return [w for w in self.workers.values() if not w.stopping and w.replaced_by is None]

    def on_message(self, worker: WorkerProcess) -> None:
        try:
            data = os.read(worker.status_fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker exited (or closed its end)
            self.selector.unregister(worker.status_fd)
            os.close(worker.status_fd)
            worker.status_fd = -1
            return
        for byte in data:
            msg = bytes([byte])
            if msg == MSG_READY and not worker.ready:
                worker.ready = True
                self.backoff = 1.0
                log.info("worker pid %d ready", worker.pid)
                old = self.workers.get(worker.replaces) if worker.replaces else None
                if old is not None and not old.stopping:
                    log.info("stopping worker pid %d (replaced by pid %d)", old.pid, worker.pid)
                    self.stop_worker(old)
            elif msg == MSG_REPLACE:
                self.replace(worker)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._worker_gone(worker, status)

    def _worker_gone(self, worker: WorkerProcess, status: int) -> None:
        if worker.status_fd >= 0:
            self.selector.unregister(worker.status_fd)
            os.close(worker.status_fd)
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if self.metrics is not None:
            self.metrics.worker_gone(worker.pid)
        if worker.stopping:
            log.info("worker pid %d exited (%s)", worker.pid, how)
        else:
            log.warning("worker pid %d died unexpectedly (%s)", worker.pid, how)
            if not self.stopping:
                self.restarts["died"] += 1
        new = self.workers.get(worker.replaced_by) if worker.replaced_by is not None else None
        if new is not None:
            new.replaces = None
        old = self.workers.get(worker.replaces) if worker.replaces is not None else None
        if old is not None and old.replaced_by == worker.pid:
            old.replaced_by = None  # the old worker counts again
            if not worker.ready and not worker.stopping and not self.stopping:
                log.error("the new worker failed to boot (%s); pid %d keeps serving the old code",
                          how, old.pid)
            return
        if worker.ready or worker.stopping or self.stopping:
            return
        # it never listened and nobody asked it to stop: the app does not load, or a crash at boot
        if code == BOOT_ERROR and not any(w.ready for w in self.workers.values()):
            log.error("worker failed to boot (the app does not load); shutting down")
            self.exit_status = BOOT_ERROR
            self.begin_stop(signal.SIGQUIT)
            return
        self.spawn_not_before = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)

    def maintain(self) -> None:
        if self.stopping:
            return
        serving = self.serving()
        if len(serving) < self.target and time.monotonic() >= self.spawn_not_before:
            for _ in range(self.target - len(serving)):
                self.spawn()
        elif len(serving) > self.target:
            ready = sorted((w for w in serving if w.ready), key=lambda w: w.started)
            for worker in ready[: len(serving) - self.target]:
                log.info("stopping worker pid %d (%d workers wanted)", worker.pid, self.target)
                self.stop_worker(worker)

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                log.warning("worker pid %d did not stop in time; killing it", worker.pid)
                worker.kill_at = None
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- signals ---------------------------------------------------------

    def begin_stop(self, sig: int) -> None:
        if self.stopping and sig != signal.SIGQUIT:
            sig = signal.SIGQUIT  # asked twice: stop quickly
        if not self.stopping and self.metrics is not None:
            self.metrics.stopping()
        if not self.stopping:
            # Our copies of the listening sockets go now, so the kernel stops queueing
            # connections that nobody would accept (they would be reset at exit);
            # each worker takes what is queued before it closes its own copy.
            for sock in self.sockets:
                sock.close()
        self.stopping = True
        for worker in list(self.workers.values()):
            self.stop_worker(worker, sig)

    def handle_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            log.info("%s: graceful stop (timeout %ss)", signal.Signals(sig).name, self.config.graceful_timeout)
            self.begin_stop(signal.SIGTERM)
        elif sig == signal.SIGQUIT:
            log.info("SIGQUIT: quick stop")
            self.begin_stop(signal.SIGQUIT)
        elif sig == signal.SIGHUP:
            if self.stopping:
                return
            log.info("SIGHUP: replacing %d worker(s) with fresh ones", len(self.serving()))
            for worker in self.serving():
                self.replace(worker)
        elif sig == signal.SIGTTIN:
            self.target += 1
            log.info("SIGTTIN: %d workers", self.target)
        elif sig == signal.SIGTTOU:
            self.target = max(1, self.target - 1)
            log.info("SIGTTOU: %d workers", self.target)

    # -- main loop ---------------------------------------------------------

    def run(self) -> int:
        try:
            self.open_sockets()
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 1
        self.install_signals()
        log.info("WSGI+ supervisor pid %d: %d worker(s) on %s", os.getpid(), self.target,
                 ", ".join(describe(s) for s in self.sockets))
        try:
            self.maintain()
            while self.workers or not self.stopping:
                self.wait()
                for sig in self._take_signals():
                    self.handle_signal(sig)
                self.reap()
                self.kill_overdue()
                self.maintain()
                if self.metrics is not None:
                    self.metrics.tick()
        finally:
            self.close()
        log.info("supervisor pid %d: stopped", os.getpid())
        return self.exit_status

    def _take_signals(self) -> list[int]:
        signals, self.signals = self.signals, []
        return signals

    def wait(self) -> None:
        deadlines = [w.kill_at for w in self.workers.values() if w.kill_at is not None]
        if not self.stopping and len(self.serving()) < self.target:
            deadlines.append(self.spawn_not_before)
        timeout = 1.0
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        if self.signals:
            timeout = 0.0
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
            elif callable(key.data):  # the metrics listener
                try:
                    key.data()
                except Exception:  # never the supervisor's end
                    log.exception("metrics listener failed")
            elif key.data.status_fd >= 0:
                self.on_message(key.data)

    def close(self) -> None:
        for worker in list(self.workers.values()):  # only after an error in the loop
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        signal.set_wakeup_fd(-1)
        for sock in self.sockets:
            sock.close()
        if self.metrics is not None:
            self.metrics.close()
        for path, identity in self.unix_paths:
            try:
                unlink_unix_socket(path, identity)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cannot remove %s: %s", path, exc)
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def run(config: Config) -> int:
    """Serve ``config``: in this process when one worker will do, else under a supervisor."""
    if config.workers <= 1 and not config.reload and config.max_requests <= 0:
        try:
            app = load_app(config)
        except AppImportError as exc:
            log.error("wsgiplus: %s", exc)
            return BOOT_ERROR
        except Exception:
            log.exception("wsgiplus: cannot load the app %r", config.app)
            return BOOT_ERROR
        try:
            return run_worker(config, None, None, app)
        except OSError as exc:
            log.error("wsgiplus: %s", exc)
            return 1
    return Supervisor(config).run()
