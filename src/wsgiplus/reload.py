"""``--reload``: notice that a ``.py`` file changed, so the worker can be replaced.

Polling ``stat()`` is enough for development and needs nothing installed; it
sees edits from any editor and works on network and container filesystems
where inotify does not. The watcher runs in the worker, which asks the
supervisor for a fresh worker (a fresh import of the new code) on a change.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger("wsgiplus.error")

__all__ = ["FileWatcher", "start_watching"]

SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv", ".venv", "env", "build", "dist"})
MAX_FILES = 20000  # a watch on a huge tree must stay cheap; the rest is ignored (and said so)
MAX_ENTRIES = 200000  # names looked at per poll, .py or not
POLL_INTERVAL = 0.5


class FileWatcher:
    """Remembers (mtime, size) of the ``.py`` files under some directories; reports the first change."""

    def __init__(self, dirs: Iterable[str], extra_files: Iterable[str] = ()) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs] or [os.getcwd()]
        self.extra_files = [os.path.abspath(f) for f in extra_files]
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
        for top in self.dirs:
            for root, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
                entries += len(filenames) + len(dirnames)
                if entries > MAX_ENTRIES:
                    self._warn_truncated()
                    return
                for name in filenames:
                    if name.endswith(".py"):
                        count += 1
                        if count > MAX_FILES:
                            self._warn_truncated()
                            return
                        yield os.path.join(root, name)

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


def start_watching(watcher: FileWatcher, on_change: Callable[[str], None],
                   interval: float = POLL_INTERVAL) -> threading.Event:
    """Poll in a daemon thread; call ``on_change(path)`` once, then stop. Set the event to stop early."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                path = watcher.changed()
            except Exception:
                log.exception("reload: watching files failed")
                return
            if path is not None:
                on_change(path)
                return

    threading.Thread(target=loop, name="wsgiplus-reload", daemon=True).start()
    return stop
