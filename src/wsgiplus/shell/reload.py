"""``--reload``: notice that a watched file changed, so the worker can be replaced.

With ``watchfiles`` installed (``pip install 'wsgiplus[reload]'``, what uvicorn
and granian use) changes come from the kernel (inotify, FSEvents...) with
debouncing, so an editor's save-as-rename-and-write is one change. Without it,
``stat()`` polling every 0.5 s: it needs nothing and also works on network and
container filesystems where inotify does not (watchfiles' own
``WATCHFILES_FORCE_POLLING=1`` gets the same there).

What is watched: ``.py`` files, plus ``reload_include`` glob patterns
(``*.html``, ``templates/*.jinja``, or a path), minus ``reload_exclude``
patterns, under ``reload_dirs`` (default: the working directory); hidden
directories, ``__pycache__``, virtualenvs, ``node_modules``, ``build``, ``dist``
are skipped. A pattern without ``/`` matches a file name anywhere; one with
``/`` matches the path relative to the watched directory (or an absolute path).

The watcher runs in the worker, which asks the supervisor for a fresh worker
(a fresh import of the new code) on a change. It is started before the app is
imported, so no edit slips in between.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("wsgiplus.error")

__all__ = ["FileWatcher", "Matcher", "WatchfilesWatcher", "backend", "make_watcher", "start_watching"]

SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv", ".venv", "env", "build", "dist"})
EDITOR_TEMP = ("*.swp", "*.swx", "*~", ".#*", "#*#", "*.tmp")
MAX_FILES = 20000  # a watch on a huge tree must stay cheap; the rest is ignored (and said so)
MAX_ENTRIES = 200000  # names looked at per poll, .py or not
POLL_INTERVAL = 0.5


def backend() -> str:
    """'watchfiles' when it is installed, else 'polling'."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return "polling"
    return "watchfiles"


class Matcher:
    """Which files under the watched directories count: ``.py`` and ``include``, minus ``exclude``."""

    def __init__(self, dirs: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs] or [os.getcwd()]
        self.include = ["*.py", *include]
        self.exclude = [*EDITOR_TEMP, *exclude]

    def _relative(self, path: str) -> str | None:
        for top in self.dirs:
            if path == top or path.startswith(top.rstrip(os.sep) + os.sep):
                return os.path.relpath(path, top).replace(os.sep, "/")
        return None

    @staticmethod
    def _matches(path: str, rel: str, patterns: Iterable[str]) -> bool:
        name = rel.rsplit("/", 1)[-1]
        for pattern in patterns:
            if os.path.isabs(pattern):
                if fnmatch.fnmatchcase(path, pattern):
                    return True
            elif fnmatch.fnmatchcase(rel, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(name, pattern)):
                return True
        return False

    def skip_dir(self, name: str) -> bool:
        return name in SKIP_DIRS or name.startswith(".")

    def wanted(self, path: str) -> bool:
        path = os.path.abspath(path)
        rel = self._relative(path)
        if rel is None:
            return False
        if any(self.skip_dir(part) for part in rel.split("/")[:-1]):
            return False
        return self._matches(path, rel, self.include) and not self._matches(path, rel, self.exclude)

    def outside_files(self) -> list[str]:
        """Files named by absolute include patterns outside the watched directories."""
        found = []
        for pattern in self.include:
            if os.path.isabs(pattern):
                found += [p for p in glob.glob(pattern) if self._relative(p) is None and os.path.isfile(p)]
        return found


class FileWatcher:
    """Polling: remembers (mtime, size) of the wanted files; reports the first change."""

    name = "stat() polling every 0.5 s"

    def __init__(self, dirs: Iterable[str], extra_files: Iterable[str] = (), *,
                 include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        self.matcher = Matcher(dirs, include, exclude)
        self.dirs = self.matcher.dirs
        self.extra_files = [os.path.abspath(f) for f in [*extra_files, *self.matcher.outside_files()]]
        self._seen: dict[str, tuple[int, int]] = {}
        self._warned = False
        self.changed()  # the first look records, it does not report

    def add_file(self, path: str) -> None:
        """Watch one more file (e.g. outside the directories) from now on."""
        path = os.path.abspath(path)
        if path not in self.extra_files:
            self.extra_files.append(path)
            try:
                st = os.stat(path)
                self._seen[path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                pass

    def files(self) -> Iterator[str]:
        count = entries = 0
        yield from self.extra_files
        matcher = self.matcher
        for top in self.dirs:
            for root, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not matcher.skip_dir(d)]
                entries += len(filenames) + len(dirnames)
                if entries > MAX_ENTRIES:
                    self._warn_truncated()
                    return
                for name in filenames:
                    path = os.path.join(root, name)
                    if matcher.wanted(path):
                        count += 1
                        if count > MAX_FILES:
                            self._warn_truncated()
                            return
                        yield path

    def _warn_truncated(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("reload: too many files under %s; watching only part of them (use --reload-dir)",
                        ", ".join(self.dirs))

    def changed(self) -> str | None:
        """The path of a file changed or removed since the last call, else None."""
        found: str | None = None
        current: dict[str, tuple[int, int]] = {}
        for path in self.files():
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            current[path] = stamp
            old = self._seen.get(path)
            if found is None and old is not None and old != stamp:
                found = path
        if found is None:
            gone = set(self._seen) - set(current)
            if gone:
                found = sorted(gone)[0]
        self._seen = current
        return found

    def start(self, on_change: Callable[[str], None], interval: float = POLL_INTERVAL) -> threading.Event:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    path = self.changed()
                except Exception:
                    log.exception("reload: watching files failed")
                    return
                if path is not None:
                    on_change(path)
                    return

        threading.Thread(target=loop, name="wsgiplus-reload", daemon=True).start()
        return stop


class WatchfilesWatcher:
    """``watchfiles``: kernel notifications, debounced. Watching starts at construction."""

    name = "watchfiles"
    TICK_MS = 300  # the thread wakes this often to look at stop and at files outside the dirs

    def __init__(self, dirs: Iterable[str], *, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        self.matcher = Matcher(dirs, include, exclude)
        self.dirs = self.matcher.dirs
        self._outside = FileWatcher([], self.matcher.outside_files())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: str | None = None
        self._on_change: Callable[[str], None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wsgiplus-reload", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            log.warning("reload: watchfiles did not start within 10 s; changes may be missed")

    def add_file(self, path: str) -> None:
        if not self.matcher.wanted(path):
            self._outside.add_file(path)

    def _filter(self, change: Any, path: str) -> bool:
        return self.matcher.wanted(path)

    def _run(self) -> None:
        import watchfiles

        try:
            for changes in watchfiles.watch(*self.dirs, watch_filter=self._filter, stop_event=self._stop,
                                            rust_timeout=self.TICK_MS, yield_on_timeout=True,
                                            debounce=400, raise_interrupt=False):
                self._ready.set()
                path = sorted(p for _, p in changes)[0] if changes else self._outside.changed()
                if path is not None:
                    self._report(path)
                    return
        except Exception:
            log.exception("reload: watching files failed")
        finally:
            self._ready.set()

    def _report(self, path: str) -> None:
        with self._lock:
            callback = self._on_change
            if callback is None:
                self._pending = path
        if callback is not None:
            callback(path)

    def start(self, on_change: Callable[[str], None]) -> threading.Event:
        with self._lock:
            self._on_change = on_change
            pending = self._pending
        if pending is not None:  # changed before we were listening: reload now
            on_change(pending)
        return self._stop


def make_watcher(dirs: Iterable[str], *, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Any:
    """The best watcher installed: watchfiles, else polling."""
    if backend() == "watchfiles":
        return WatchfilesWatcher(dirs, include=include, exclude=exclude)
    return FileWatcher(dirs, include=include, exclude=exclude)


def start_watching(watcher: Any, on_change: Callable[[str], None],
                   interval: float = POLL_INTERVAL) -> threading.Event:
    """Watch in a daemon thread; call ``on_change(path)`` once, then stop. Set the event to stop early."""
    if isinstance(watcher, FileWatcher):
        return watcher.start(on_change, interval)
    return watcher.start(on_change)
