"""Logging setup from a ``Config``: levels, where errors and access lines go, text or JSON.

Two streams, as in gunicorn: the error log (``wsgiplus.error`` and the other
``wsgiplus.*`` loggers) to stderr or ``error_logfile``; the access log
(``wsgiplus.access``) to stdout or ``access_logfile``. Only WSGI+'s own loggers
are configured, never the root logger: an app's libraries keep their own
levels (no INFO flood from httpx), and an app that configures logging itself
(Django) does not see its lines twice. Files are opened with
``WatchedFileHandler`` so logrotate can move them without a signal.

``log_config`` names a file of the user's own (``logging.config.dictConfig`` as
JSON or TOML, or ``fileConfig`` ini), applied after this setup, so it may
change WSGI+'s loggers too; loggers it does not name keep working.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from typing import IO, Any

__all__ = ["JSONFormatter", "TEXT_FORMAT", "apply_log_config", "setup_logging"]

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
    ours = logging.getLogger("wsgiplus")
    _install(ours, error)
    ours.setLevel(level)
    ours.propagate = False  # the root logger is the app's
    logging.getLogger("wsgiplus.error").setLevel(logging.NOTSET)

    access = logging.getLogger("wsgiplus.access")
    access.propagate = False
    handler = _handler(config.access_logfile, sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))  # AccessLogger builds the line
    _install(access, handler)
    # the access log is on at any --log-level unless turned off
    access.setLevel(logging.INFO if config.access_log else logging.CRITICAL + 1)
    if getattr(config, "log_config", None):
        apply_log_config(config.log_config)


def apply_log_config(path: str) -> None:
    """Apply a logging config file: ``.json``/``.toml`` (dictConfig) or ini (fileConfig).

    ``disable_existing_loggers`` defaults to false here (the standard library's
    true would silence WSGI+'s own loggers); a file may still say true.
    ValueError names the file and what is wrong.
    """
    import logging.config

    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in (".json", ".toml"):
            if suffix == ".json":
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            else:
                from .configfile import tomllib

                if tomllib is None:
                    raise ValueError("reading TOML on Python 3.10 needs 'tomli'")
                with open(path, "rb") as f:
                    data = tomllib.load(f)
            if not isinstance(data, dict):
                raise ValueError("want a dictConfig mapping at the top level")
            data.setdefault("version", 1)
            data.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(data)
        else:
            if not os.path.isfile(path):
                raise FileNotFoundError(path)
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except FileNotFoundError:
        raise ValueError(f"log config {path}: no such file") from None
    except Exception as exc:  # json/toml/configparser/dictConfig errors: all say what is wrong
        raise ValueError(f"log config {path}: {exc}") from None
