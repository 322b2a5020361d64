"""The loopback upstream of the fan-in scenario: answers every GET after a fixed delay.

``python -m bench.upstream PORT [DELAY]``. One asyncio (uvloop) process. It
keeps connections alive, as a real API does, so the servers under test can
reuse their upstream connections (a pooled client is what a real app uses)
and no run is limited by ephemeral ports in TIME_WAIT.
"""

from __future__ import annotations

import asyncio
import sys

BODY = b"upstream says hi"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


PENDING = [0]  # requests waiting for their answer, across connections


class Upstream(asyncio.Protocol):
    """Requests are bodiless GETs; each is answered ``delay`` seconds after its head arrived.

    ``GET /stats`` is answered at once with the number of pending requests: the
    benchmark waits for 0 so that work left over from a warm-up (queued in a
    thread server) has drained before a measured run starts.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        loop = asyncio.get_running_loop()
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            if head.startswith(b"GET /stats "):
                body = b"%d" % PENDING[0]
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                continue
            PENDING[0] += 1
            loop.call_later(self.delay, self._answer)

    def _answer(self) -> None:
        PENDING[0] -= 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def main(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(delay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.1))
