"""Support for the optional compiled build (mypyc, see setup.py); never compiled itself.

``mypyc_attr`` marks the compiled classes that pure-Python classes subclass (the HTTP/2
and WebSocket connections, the worker's server, test fakes). Without mypy_extensions
installed it is a decorator that does nothing, so the pure-Python package needs nothing
more. ``compiled()`` says whether this process runs the compiled modules (the banner
says so).
"""

from __future__ import annotations

from typing import Any

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # the pure-Python install: the attribute only matters to mypyc

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[no-redef]
        return lambda cls: cls


def compiled() -> bool:
    """True when the request path runs as C extensions (``WSGIPLUS_COMPILE=1`` install)."""
    from .server import core

    return not core.__file__.endswith((".py", ".pyc"))


__all__ = ["compiled", "mypyc_attr"]
