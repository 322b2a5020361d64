"""The published HTTP/2 attacks over a real socket: each ends in GOAWAY, the app runs a bounded
number of times, and the server goes on serving other connections.

Figures (server CPU, RSS, app calls) come from ``python bench/h2_attacks.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_for
from h2attacks import ATTACKS, attack_zero_window
from h2client import H2Client

from wsgiplus.testing import ServerThread


class Counting:
    """The app: counts its calls; /big is a large streamed body."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = 0
        self.chunks = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        with self.lock:
            self.calls += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/big":
            return self.big()
        return [b"ok"]

    def big(self) -> Iterator[bytes]:
        try:
            for _ in range(1000):  # 64 MB if nothing stopped it
                self.chunks += 1
                yield b"z" * 65536
        finally:
            self.closed += 1


@pytest.fixture
def target() -> Iterator[tuple[ServerThread, Counting]]:
    app = Counting()
    server = ServerThread(app, threads=4, h2_window_timeout=1.0).start()
    yield server, app
    server.stop()


def still_serving(server: ServerThread) -> None:
    client = H2Client(server.port)
    assert client.get("/after").status == 200
    client.close()


# how many times the app may run during each attack: rapid reset with HEADERS and
# RST_STREAM in one write runs it only for pairs a TCP read happens to split;
# split writes may run it once per stream the reset budget lets through
BOUNDS = {
    "rapid_reset": 100,
    "rapid_reset_split": 400,
    "continuation_flood": 0,
    "hpack_bomb": 1,
    "settings_flood": 0,
    "ping_flood": 0,
    "empty_data_flood": 0,
    "window_update_flood": 0,
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_ends_in_enhance_your_calm(target: tuple[ServerThread, Counting], name: str) -> None:
    server, app = target
    result = ATTACKS[name](server.port)
    assert result["goaway"] == "ENHANCE_YOUR_CALM", result
    assert result["closed"], result
    # bounded: the server gave up long before the client did
    assert result["frames_sent"] < {"rapid_reset": 40000, "rapid_reset_split": 10000}.get(name, 100_000), result
    assert app.calls <= BOUNDS[name], (app.calls, result)
    still_serving(server)


def test_rapid_reset_streams_never_outnumber_the_concurrency_limit(target: tuple[ServerThread, Counting]) -> None:
    server, app = target
    ATTACKS["rapid_reset_split"](server.port)
    # every app that ran was closed again (close() exactly once), none left running
    still_serving(server)
    assert server.call(lambda: server.server.active) == 0


def test_zero_window_forever_is_reset_and_the_iterable_closed(target: tuple[ServerThread, Counting]) -> None:
    server, app = target
    result = attack_zero_window(server.port)
    assert result["reset"] == "CANCEL" and result["data_bytes_received"] == 0, result
    assert wait_for(lambda: app.closed == 1)
    assert app.chunks < 16  # parked on the stream's buffer, not 64 MB produced
    still_serving(server)
