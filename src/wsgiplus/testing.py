"""Run a real server in a background thread, for tests and notebooks.

    with ServerThread(app, threads=2) as server:
        httpx.get(server.url + "/")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .server.core import Server, new_event_loop
from .shell.config import Config

__all__ = ["ServerThread"]


class ServerThread:
    """A ``Server`` on its own loop thread, bound to an ephemeral loopback port by default."""

    def __init__(self, app: Callable[..., Any], config: Config | None = None, **options: Any) -> None:
        options.setdefault("bind", ["127.0.0.1:0"])
        options.setdefault("access_log", False)
        self.config = (config or Config()).replace(**options)
        self.server = Server(app, self.config)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._main, name="wsgiplus-test-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        loop = self.loop = new_event_loop(self.config.loop)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        await self.server.start()
        self._ready.set()
        await self.server.wait_stopped()
        await self.server.shutdown()

    @property
    def address(self) -> str:
        return self.server.addresses[0]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def url(self) -> str:
        addr = self.address
        return f"http://{addr}"

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop thread and return its result."""
        assert self.loop is not None
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(fn(*args))
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        return box[0] if box else None

    def stop(self, timeout: float | None = 10.0) -> None:
        if self._thread is None:
            return
        self.server.request_stop()
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
