"""``-c gunicorn.conf.py``: read a gunicorn config file the way gunicorn does, keep what WSGI+ knows.

gunicorn executes the file as Python and takes the module-level names that are
gunicorn settings (``workers = multiprocessing.cpu_count() * 2 + 1`` works);
other names are the file's own helpers and are skipped silently, as gunicorn
does. Settings with a WSGI+ equivalent become ``Config`` values (checked like
a TOML file's, with the file and setting named); gunicorn settings without
one are listed in one warning, so nothing is dropped unsaid.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["GUNICORN_SETTINGS", "load_gunicorn_file", "translate"]

UNLIMITED = 1024 * 1024  # gunicorn's 0 ("no limit") for line and field sizes, as the worker class


def _limit(zero: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        return zero if value in (0, "0") else value

    return convert


def _same(value: Any) -> Any:
    return value


def _errorlog(value: Any) -> Any:
    return None if value in ("-", None) else value


def http2_wanted(value: Any) -> bool:
    """gunicorn's ``http_protocols`` (``"h2,h1"`` or a list): does it name HTTP/2?"""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return "h2" in [str(item).strip().lower() for item in items]


# gunicorn setting -> (Config field, converter)
MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "wsgi_app": ("app", _same),
    "bind": ("bind", lambda v: [v] if isinstance(v, str) else list(v)),
    "workers": ("workers", _same),
    "threads": ("threads", _same),
    "backlog": ("backlog", _same),
    "keepalive": ("keepalive_timeout", _same),
    "graceful_timeout": ("graceful_timeout", _same),
    "max_requests": ("max_requests", _same),
    "max_requests_jitter": ("max_requests_jitter", _same),
    "limit_request_line": ("max_request_line", _limit(UNLIMITED)),
    "limit_request_fields": ("max_header_count", _limit(32768)),
    "limit_request_field_size": ("max_header_size", _limit(UNLIMITED)),
    "worker_connections": ("max_connections", _same),
    "forwarded_allow_ips": ("forwarded_allow_ips", _same),
    "certfile": ("certfile", _same),
    "keyfile": ("keyfile", _same),
    "access_log_format": ("access_log_format", _same),
    "errorlog": ("error_logfile", _errorlog),
    "loglevel": ("log_level", lambda v: str(v).lower()),
    "logconfig": ("log_config", _same),
    "reload": ("reload", _same),
    "reload_extra_files": ("reload_include", lambda v: [v] if isinstance(v, str) else list(v)),
    "chdir": ("chdir", _same),
    "pythonpath": ("pythonpath", _same),
    "pidfile": ("pidfile", _same),
    "raw_env": ("env", lambda v: [v] if isinstance(v, str) else list(v)),
    "preload_app": ("preload", _same),
    "root_path": ("root_path", _same),
    "http_protocols": ("http2", http2_wanted),
    "http2_max_concurrent_streams": ("h2_max_concurrent_streams", _same),
    "http2_initial_window_size": ("h2_initial_window_size", _same),
    "http2_max_header_list_size": ("h2_max_header_list_size", _same),
}

# gunicorn's settings, for telling a setting WSGI+ ignores from a helper variable of the file
_FALLBACK = {
    "accesslog", "capture_output", "check_config", "child_exit", "daemon", "default_proc_name",
    "group", "initgroups", "logconfig_dict", "logconfig_json", "logger_class", "nworkers_changed",
    "on_exit", "on_reload", "on_starting", "paste", "post_fork", "post_request", "post_worker_init",
    "pre_exec", "pre_fork", "pre_request", "print_config", "proc_name", "proxy_allow_ips",
    "proxy_protocol", "reload_engine", "reuse_port", "secure_scheme_headers", "sendfile", "spew",
    "ssl_context", "ssl_version", "statsd_host", "statsd_prefix", "syslog", "syslog_addr", "timeout",
    "tmp_upload_dir", "umask", "user", "when_ready", "worker_abort", "worker_class", "worker_exit",
    "worker_int", "worker_tmp_dir", "ca_certs", "cert_reqs", "ciphers",
}


def _known() -> set[str]:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except Exception:  # gunicorn is not needed to read its config file
        return set(MAPPED) | _FALLBACK
    return {s.name for s in KNOWN_SETTINGS} | set(MAPPED) | _FALLBACK


GUNICORN_SETTINGS = _known()


def translate(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """gunicorn settings -> (Config values, the gunicorn settings WSGI+ ignores)."""
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for name, value in settings.items():
        if name in MAPPED:
            field, convert = MAPPED[name]
            values[field] = convert(value)
        elif name == "accesslog":  # gunicorn: None (its default) = no access log
            if value is None:
                values["access_log"] = False
            else:
                values["access_log"] = True
                values["access_logfile"] = value
        elif name == "worker_class" and "wsgiplus" in str(value):
            continue  # the file was written for gunicorn -k wsgiplus.gunicorn.Worker: fine
        elif name in ("config", "default_proc_name"):
            continue
        else:
            ignored.append(name)
    return values, sorted(ignored)


def load_gunicorn_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """Execute a gunicorn config file; return (raw Config values, ignored gunicorn settings).

    Raises ``ValueError`` (file named) if the file does not run; the values are
    still to be checked (``configfile.normalize``).
    """
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc.strerror or exc}") from None
    namespace: dict[str, Any] = {"__file__": str(p), "__name__": "__config__"}
    try:
        exec(compile(source, str(p), "exec"), namespace)
    except Exception as exc:  # the file's own error, whatever it is
        raise ValueError(f"{p}: the gunicorn config file failed: {type(exc).__name__}: {exc}") from None
    settings = {k: v for k, v in namespace.items()
                if k in GUNICORN_SETTINGS and not k.startswith("_") and not isinstance(v, types.ModuleType)}
    return translate(settings)
