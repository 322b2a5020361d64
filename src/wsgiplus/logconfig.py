"""Logging setup from a ``Config``: levels, where errors and access lines go, text or JSON.

Two streams, as in gunicorn: the error log (``wsgiplus.error`` and the app's
own loggers, via the root logger) to stderr or ``error_logfile``; the access
log (``wsgiplus.access``) to stdout or ``access_logfile``. Files are opened
with ``WatchedFileHandler`` so logrotate can move them without a signal.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from typing import IO, Any

__all__ = ["JSONFormatter", "TEXT_FORMAT", "setup_logging"]

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
LEVELS = ("critical", "error", "warning", "info", "debug")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


def _handler(target: str | None, default: IO[str]) -> logging.Handler:
    if target in (None, "", "-"):
        return logging.StreamHandler(default)
    return logging.handlers.WatchedFileHandler(target, encoding="utf-8")


def _install(logger: logging.Logger, handler: logging.Handler) -> None:
    """Replace handlers we installed before (setup may run again, e.g. in a worker)."""
    for old in list(logger.handlers):
        if getattr(old, "_wsgiplus", False):
            logger.removeHandler(old)
            old.close()
    handler._wsgiplus = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def setup_logging(config: Any) -> None:
    """Configure the error and access logs from ``config`` (a ``Config``)."""
    level_name = str(config.log_level).lower()
    if level_name not in LEVELS:
        raise ValueError(f"log level {config.log_level!r}: want one of {', '.join(LEVELS)}")
    level = getattr(logging, level_name.upper())
    as_json = bool(config.log_json)

    error = _handler(config.error_logfile, sys.stderr)
    error.setFormatter(JSONFormatter() if as_json else logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    _install(root, error)
    root.setLevel(level)
    logging.getLogger("wsgiplus.error").setLevel(logging.NOTSET)

    access = logging.getLogger("wsgiplus.access")
    access.propagate = False
    handler = _handler(config.access_logfile, sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))  # AccessLogger builds the line
    _install(access, handler)
    # the access log is on at any --log-level unless turned off
    access.setLevel(logging.INFO if config.access_log else logging.CRITICAL + 1)
