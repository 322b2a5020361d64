"""WSGI+: a WSGI server where apps suspend on futures without holding a thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

from .runner.wsgi import WSGIPLUS_VERSION  # noqa: E402
from .server.core import Server  # noqa: E402
from .shell.config import Config  # noqa: E402

__all__ = ["Config", "Server", "WSGIPLUS_VERSION", "__version__", "serve"]


def serve(app: Callable[..., Any], bind: str | list[str] = "127.0.0.1:8000", threads: int = 8,
          **options: Any) -> int:
    """Serve ``app`` until SIGTERM/SIGINT: ``wsgiplus.serve(app, bind="0.0.0.0:8000")``.

    Any ``Config`` field is an option (``workers=4``, ``max_requests=1000``, ...);
    returns the exit status. Logging is left to the caller unless it has none.
    """
    import logging

    from .shell.supervisor import run

    binds = [bind] if isinstance(bind, str) else list(bind)
    config = Config(app=app, bind=binds, threads=threads, **options).validate()
    if not logging.getLogger().handlers:
        from .shell.logconfig import setup_logging

        setup_logging(config)
    return run(config)
