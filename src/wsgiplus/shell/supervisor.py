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
import importlib
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ..server.core import Server, new_event_loop
from ..server.listeners import (
    ListenError,
    bind_socket,
    describe,
    socket_from_fd,
    unix_socket_file,
    unlink_unix_socket,
)
from .config import Config
from .importer import AppImportError, import_app

log = logging.getLogger("wsgiplus.error")

__all__ = ["BOOT_ERROR", "Supervisor", "WorkerServer", "load_app", "run", "run_worker"]

BOOT_ERROR = 3  # a worker's exit status when the app cannot be imported (as gunicorn's)
KILL_MARGIN = 10.0  # beyond graceful_timeout, before SIGKILL (the worker's own pool wait is 5 s)
MSG_READY = b"R"
MSG_REPLACE = b"Q"


# -- inside a worker -----------------------------------------------------------


# A worker's server: ``Server`` itself counts finished requests toward ``max_requests`` and
# calls ``on_max_requests`` (the name stays for the gunicorn worker and older imports).
WorkerServer = Server


def load_app(config: Config) -> Callable[..., Any]:
    """The WSGI app named by ``config.app`` (imported now), or the callable given."""
    app = config.app
    if app is None:
        raise AppImportError("no app given")
    if isinstance(app, str):
        return import_app(app, factory=config.factory)
    return app() if config.factory else app


def _ours(filename: str) -> bool:
    """Frames a user need not read: WSGI+'s own and the import machinery's."""
    return filename.startswith(_NOT_THE_APP)


_NOT_THE_APP = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
                os.path.dirname(importlib.__file__) + os.sep, "<frozen importlib")


def app_error_text(config: Config, exc: BaseException) -> str:
    """Why the app does not load, the same in one process and in N workers: one line for a
    bad app spec, else the app's own traceback (frames of WSGI+ and importlib left out)."""
    spec = config.app if isinstance(config.app, str) else repr(config.app)
    if isinstance(exc, AppImportError):
        return f"cannot load the app {spec!r}: {exc}"
    tb = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending = [tb]
    while pending:
        t = pending.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list([f for f in t.stack if not _ours(f.filename)])
        pending += [c for c in (t.__cause__, t.__context__) if c is not None]
    return f"cannot load the app {spec!r}:\n" + "".join(tb.format()).rstrip()


def _failed_app(text: str) -> Callable[..., Any]:
    """With --reload, an app that does not import answers 500 with why, until the file is fixed."""
    body = f"wsgiplus: the app failed to load (fix it; --reload is watching)\n\n{text}".encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def run_worker(config: Config, sockets: list[socket.socket] | None, status_fd: int | None = None,
               app: Callable[..., Any] | None = None, may_report: Callable[[], bool] | None = None,
               sources: Sequence[str] = ()) -> int:
    """Serve ``config.app`` on ``sockets`` until told to stop; return the exit status.

    ``sockets`` None: bind ``config.bind`` here. ``status_fd`` is the pipe to the
    supervisor (None when running in-process). ``may_report()`` says whether this
    worker is the one to print an import error (N workers print it once).
    """
    watcher = None
    if config.reload:  # look at the files before importing them, so no edit slips between
        from .reload import make_watcher

        watcher = make_watcher(config.reload_dirs or [os.getcwd()], include=config.reload_include,
                               exclude=config.reload_exclude)
    try:
        app = app if app is not None else load_app(config)
    except Exception as exc:  # the app's import error, whatever it is
        text = app_error_text(config, exc)
        if not config.reload:
            # the supervisor stops the other workers (SIGQUIT) once one exits: not between
            # taking the turn to print and printing, or nobody prints
            masked = hasattr(signal, "pthread_sigmask")
            if masked:
                old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGQUIT, signal.SIGTERM})
            try:
                if may_report is None or may_report():
                    log.error("%s", text)
                    for handler in logging.getLogger("wsgiplus").handlers:
                        handler.flush()
            finally:
                if masked:
                    if may_report is not None:
                        # a forked worker about to exit: a stop signal from here on must not
                        # raise into whatever runs (importlib's cleanup callbacks print it as
                        # "Exception ignored" with a traceback, seen once on 3.12)
                        for sig in (signal.SIGQUIT, signal.SIGTERM):
                            signal.signal(sig, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
            return BOOT_ERROR
        log.error("%s\n(serving this error until a file changes)", text)
        filename = getattr(exc, "filename", None)
        if isinstance(filename, str) and watcher is not None:
            watcher.add_file(filename)
        app = _failed_app(text)
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve_worker(config, sockets, status_fd, app, watcher, sources))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


async def _serve_worker(config: Config, sockets: list[socket.socket] | None, status_fd: int | None,
                        app: Callable[..., Any], watcher: Any, sources: Sequence[str] = ()) -> int:
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
    if status_fd is None:  # the process the user started: tell them what runs where
        from .banner import log_banner

        uv = type(loop).__module__.startswith("uvloop")
        log_banner(config, server.addresses, sources=sources, loop="uvloop" if uv else "asyncio")

    def stop(sig: int) -> None:
        # In this process alone: TERM/INT graceful, a second one (or QUIT) stops now. Under a
        # supervisor, the supervisor decides: TERM graceful (again: no change), QUIT now.
        again = bool(stopping) and status_fd is None
        if sig == signal.SIGQUIT or again:
            if not quick:
                quick.append(True)
                if stopping:
                    log.info("worker %d: %s%s: stopping now, cutting %d request(s)", pid,
                             signal.Signals(sig).name, " again" if again else "", server.active)
            server.stop_now()
        elif not stopping:
            stopping.append(sig)
            server.request_stop()

    stopping: list[int] = []
    sigs = [signal.SIGTERM, signal.SIGQUIT] + ([signal.SIGINT] if status_fd is None else [])
    for sig in sigs:  # a supervised worker ignores SIGINT: the terminal sends it to the whole group
        loop.add_signal_handler(sig, stop, sig)

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
    if status_fd is None and server.active and not quick:
        log.info("waiting for %d request(s) to finish; press Ctrl-C again to stop now", server.active)
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

    def __init__(self, config: Config, app: Callable[..., Any] | None = None,
                 sources: Sequence[str] = ()) -> None:
        self.config = config
        self.sources = list(sources)
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
        # one token: the worker that takes it prints an import error, so N workers print it once
        self._say_r, self._say_w = os.pipe()
        os.set_blocking(self._say_r, False)
        os.set_blocking(self._say_w, False)
        self.rearm_report()

    def rearm_report(self) -> None:
        """Let the next worker that cannot import the app print why (one token in the pipe)."""
        try:
            os.read(self._say_r, 64)
        except BlockingIOError:
            pass
        os.write(self._say_w, b"x")

    def _may_report(self) -> bool:
        try:
            return os.read(self._say_r, 1) == b"x"
        except BlockingIOError:
            return False

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
            for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGINT):
                # the supervisor's business, not a worker's (Ctrl-C reaches the whole group)
                signal.signal(sig, signal.SIG_IGN)
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
            os.close(self._say_w)
            status = run_worker(self.config, self.sockets, status_fd, self.app, self._may_report)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
            status = 1
        finally:  # a forked child must never return into the supervisor's code, whatever happens
            try:
                for sig in (signal.SIGQUIT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)  # a late stop signal must not raise here
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
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
                self.rearm_report()
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
        elif code == BOOT_ERROR and not worker.ready:
            log.warning("worker pid %d could not load the app (%s)", worker.pid, how)
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
            name = signal.Signals(sig).name
            if self.stopping:
                log.info("%s again: stopping now (in-flight requests are cut)", name)
                self.begin_stop(signal.SIGQUIT)
                return
            log.info("%s: graceful stop: waiting for in-flight requests (timeout %ss); "
                     "press Ctrl-C again to stop now", name, self.config.graceful_timeout)
            self.begin_stop(signal.SIGTERM)
        elif sig == signal.SIGQUIT:
            log.info("SIGQUIT: quick stop")
            self.begin_stop(signal.SIGQUIT)
        elif sig == signal.SIGHUP:
            if self.stopping:
                return
            log.info("SIGHUP: replacing %d worker(s) with fresh ones", len(self.serving()))
            self.rearm_report()
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
        except ListenError as exc:
            log.error("%s", exc)
            return exc.status
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 1
        self.install_signals()
        from .banner import log_banner

        log_banner(self.config, [describe(s) for s in self.sockets], sources=self.sources,
                   supervisor_pid=os.getpid())
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
        for fd in (self._wake_r, self._wake_w, self._say_r, self._say_w):
            os.close(fd)


def prepare_process(config: Config) -> None:
    """The process settings, before anything is imported: chdir, sys.path, the environment."""
    if config.chdir:
        os.chdir(config.chdir)
    for path in reversed(config.pythonpath):
        path = os.path.abspath(path)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    if config.env_file:
        try:
            from dotenv import dotenv_values
        except ImportError:
            raise ValueError("env_file needs python-dotenv: pip install 'wsgiplus[dotenv]'") from None
        for key, value in dotenv_values(config.env_file).items():
            if value is not None:
                os.environ.setdefault(key, value)  # the environment you started with wins
    for entry in config.env:
        key, _, value = entry.partition("=")
        os.environ[key] = value


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)  # never a half-written pid file


def _remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # someone else's by now
        os.unlink(path)
    except OSError:
        pass


def run(config: Config, *, sources: Sequence[str] = ()) -> int:
    """Serve ``config``: in this process when one worker will do, else under a supervisor.

    ``sources`` (where the settings came from, for the banner) is the CLI's.
    """
    try:
        prepare_process(config)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if config.pidfile:
        try:
            _write_pidfile(config.pidfile)
        except OSError as exc:
            log.error("cannot write the pid file %s: %s", config.pidfile, exc.strerror)
            return 1
    try:
        return _run(config, sources)
    finally:
        if config.pidfile:
            _remove_pidfile(config.pidfile)


def _run(config: Config, sources: Sequence[str]) -> int:
    supervised = not (config.workers <= 1 and not config.reload and config.max_requests <= 0)
    app = None
    if not supervised or config.preload:
        try:
            app = load_app(config)
        except Exception as exc:  # the app's import error, whatever it is
            log.error("%s", app_error_text(config, exc))
            return BOOT_ERROR
    if not supervised:
        try:
            return run_worker(config, None, None, app, sources=sources)
        except ListenError as exc:
            log.error("%s", exc)
            return exc.status
        except OSError as exc:
            log.error("wsgiplus: %s", exc)
            return 1
    return Supervisor(config, app=app, sources=sources).run()
