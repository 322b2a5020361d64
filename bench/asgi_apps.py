"""The same apps as ASGI, through a2wsgi, for uvicorn: ``bench.asgi_apps:hello``."""

from __future__ import annotations

from typing import Any

from bench import apps

_wrapped: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name.startswith("_") or not hasattr(apps, name):
        raise AttributeError(name)
    if name not in _wrapped:
        from a2wsgi import WSGIMiddleware

        _wrapped[name] = WSGIMiddleware(getattr(apps, name))
    return _wrapped[name]
