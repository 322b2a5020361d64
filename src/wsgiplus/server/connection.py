"""What the ``Server`` needs from a connection, whatever its protocol.

HTTP/1.1 (server.py's ``HTTPConnection``) implements it now; HTTP/2, WebSocket
and taken-over connections implement it too. ``Server.connections`` is a set
of ``Connection``: the sweep (timeouts), graceful shutdown, ``max_connections``
and the access log use only what is here. Every method runs on the loop thread.

A connection starts exchanges with ``run_exchange``: one place that builds the
environ (``wsgi.make_environ``), creates the ``Runner`` and starts it, so every
protocol gets the same environ keys, proxy-header handling, deadline and
suspension limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, ClassVar

from .._compiled import mypyc_attr
from ..runner.core import Runner
from ..runner.wsgi import make_environ
from .streams import Stream

if TYPE_CHECKING:
    from .core import Server

__all__ = ["Connection"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed by pure-Python classes
class Connection:
    """Base of every connection the server holds (loop thread only).

    Subclasses set ``transport`` when connected, call ``server.connection_made(self)``
    (False: ``max_connections`` is exceeded; refuse in the protocol's own way: HTTP/1.1
    answers 503) and ``server.connection_lost(self)`` when gone, and, once per finished
    exchange, ``server.access(self, record)`` (the access log line, ``--max-requests``)
    after ``server.active -= 1`` (``run_exchange`` counted it in).
    """

    # the fields every connection has (set by the subclass's __init__); subclasses
    # add their own slots: no per-connection __dict__
    __slots__ = ("server", "loop", "transport", "remote", "requests", "disconnected", "closing",
                 "draining")

    protocol_name: ClassVar[str] = "?"  # "HTTP/1.1", "HTTP/2", "WebSocket"

    server: Server
    loop: asyncio.AbstractEventLoop
    transport: asyncio.BaseTransport | None
    remote: tuple[str, int] | None
    requests: int  # exchanges finished on this connection
    disconnected: bool
    closing: bool
    draining: bool

    # -- what the server calls ------------------------------------------------

    def check_timer(self, now: float) -> None:
        """The server's sweep (every second or so): fire a due timeout (``loop.time()`` ``now``)."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Graceful stop: finish the exchanges the client has sent, take no new ones, then close."""
        raise NotImplementedError

    def close(self) -> None:
        """Close after what is buffered has been sent."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close now (past the graceful timeout): in-flight exchanges are cut."""
        transport = self.transport
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]

    @property
    def busy(self) -> bool:
        """An exchange is in flight (for shutdown and metrics)."""
        raise NotImplementedError

    # -- what subclasses use ----------------------------------------------------

    def run_exchange(
        self,
        stream: Stream,
        template: dict[str, Any],
        *,
        method: str,
        target: bytes,
        path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        body: IO[bytes] | None,
        chunked: bool = False,
        trailers: list[tuple[bytes, bytes]] | None = None,
        prepare: Callable[[dict[str, Any], Runner], None] | None = None,
    ) -> Runner:
        """Build the environ, make the runner for ``stream`` and start it.

        ``prepare(environ, runner)``, if given, runs before the app is called:
        a protocol adds what only it offers (HTTP/1.1: ``wsgiplus.websocket``).
        """
        server = self.server
        runner = Runner(
            server.app,
            stream,
            self.loop,
            server.pool,
            timeout=server.config.request_timeout,
            suspensions=server.suspensions,
        )
        environ = make_environ(  # positional: this is the hot path
            template, method, target, path, query, headers, http_version, body, self.remote, chunked,
            trailers, stream.is_disconnected, runner.pause_output, runner.early_hints, server.proxy_fixer,
        )
        record = stream.record
        record.environ = environ
        record.target = environ["RAW_URI"]
        record.protocol = environ["SERVER_PROTOCOL"]
        record.path = environ["PATH_INFO"]
        record.query = environ["QUERY_STRING"]
        record.started_at = time.monotonic()  # the duration is the app's part, as before
        if prepare is not None:
            prepare(environ, runner)
        server.active += 1
        runner.start(environ)
        return runner
