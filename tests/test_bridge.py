"""The async bridge: coroutines, timers, offloaded calls and fan-out as futures, in and out of a server."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import pytest
from conftest import get_many, wait_for

from wsgiplus import bridge
from wsgiplus.bridge import Bridge, fan_in

ROOT = Path(__file__).resolve().parent.parent
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture
def fresh() -> Any:
    b = Bridge(offload_threads=4, name="test-bridge")
    yield b
    b.shutdown()


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


async def fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


def test_starts_lazily_and_runs_coroutines_outside_any_server(fresh: Bridge) -> None:
    assert not fresh.running
    assert not any(t.name == "test-bridge-loop" for t in threading.enumerate())
    assert fresh.run(double(21)).result(10) == 42
    assert fresh.running
    assert any(t.name == "test-bridge-loop" for t in threading.enumerate())
    with pytest.raises(ValueError, match="boom"):
        fresh.run(fail()).result(10)
    with pytest.raises(TypeError, match="coroutine"):
        fresh.run(double)  # type: ignore[arg-type]


def test_contextvars_follow_the_work_as_a_copy(fresh: Bridge) -> None:
    async def read_and_set() -> str:
        seen = var.get()
        var.set("changed inside")
        return seen

    def read_blocking() -> tuple[str, str]:
        return var.get(), threading.current_thread().name

    token = var.set("request-7")
    try:
        assert fresh.run(read_and_set()).result(10) == "request-7"
        seen, thread = fresh.offload(read_blocking).result(10)
        assert seen == "request-7" and thread.startswith("test-bridge-offload")
        assert var.get() == "request-7"  # the coroutine's change stayed in its copy
    finally:
        var.reset(token)


def test_sleep_is_a_timer_and_cancel_disarms_it(fresh: Bridge) -> None:
    assert fresh.sleep(0.01, "woke").result(10) == "woke"
    fut = fresh.sleep(60)
    assert fut.cancel() and fut.cancelled()
    # the loop is still healthy after a disarmed timer
    assert fresh.sleep(0, 1).result(10) == 1


def test_run_timeout_and_cancel_reach_the_coroutine(fresh: Bridge) -> None:
    with pytest.raises(TimeoutError):
        fresh.run(asyncio.sleep(60), timeout=0.01).result(10)
    cancelled = threading.Event()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    fut = fresh.run(forever())
    assert started.wait(10)
    fut.cancel()
    assert cancelled.wait(10)


def test_gather_fans_out_in_one_call(fresh: Bridge) -> None:
    plain: Future[str] = Future()
    out = fresh.gather(double(1), fresh.sleep(0.001, "t"), fresh.offload(sum, [1, 2, 3]), plain)
    assert not out.done()
    plain.set_result("p")
    assert out.result(10) == [2, "t", 6, "p"]
    with pytest.raises(ValueError, match="boom"):
        fresh.gather(double(1), fail()).result(10)
    results = fresh.gather(double(2), fail(), return_exceptions=True).result(10)
    assert results[0] == 4 and isinstance(results[1], ValueError)
    assert fan_in([]).result(0) == []


def test_cancelling_a_gather_cancels_every_child(fresh: Bridge) -> None:
    cancelled: list[int] = []
    started: list[int] = []
    lock = threading.Lock()

    async def wait_forever(i: int) -> None:
        try:
            with lock:
                started.append(i)
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with lock:
                cancelled.append(i)
            raise

    out = fresh.gather(wait_forever(0), wait_forever(1))
    assert wait_for(lambda: len(started) == 2)
    out.cancel()
    assert wait_for(lambda: sorted(cancelled) == [0, 1])


def test_shutdown_runs_hooks_cancels_pending_work_and_can_restart(fresh: Bridge) -> None:
    calls: list[str] = []

    async def async_hook() -> None:
        calls.append("async")

    fresh.on_shutdown(async_hook)
    fresh.on_shutdown(lambda: calls.append("sync"))
    pending = fresh.run(asyncio.sleep(3600))
    fresh.offload(lambda: None).result(10)
    thread = fresh._thread
    fresh.shutdown()
    assert calls == ["async", "sync"]
    assert thread is not None and not thread.is_alive()
    with pytest.raises(CancelledError):
        pending.result(10)
    assert not fresh.running
    assert fresh.run(double(5)).result(10) == 10  # starts afresh


def test_interpreter_exit_shuts_the_default_bridge_down_cleanly() -> None:
    script = (
        "import asyncio\n"
        "from wsgiplus import bridge\n"
        "async def close(): print('hook ran', flush=True)\n"
        "bridge.on_shutdown(close)\n"
        "print(bridge.run(asyncio.sleep(0, 'ran')).result(10), flush=True)\n"
        "bridge.run(asyncio.sleep(3600))\n"  # still pending at exit: cancelled, not leaked
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ran", "hook", "ran"]
    assert "Task was destroyed" not in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_gets_its_own_loop(fresh: Bridge) -> None:
    assert fresh.run(double(1)).result(10) == 2  # the parent's loop thread exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's loop thread is not here
        try:
            value = fresh.run(double(50)).result(10)
            os.write(w, str(value).encode())
        finally:
            os._exit(0)
    os.close(w)
    for _ in range(300):  # bounded: a stuck child is killed, not waited for
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"100"


def test_under_the_server_100_fanouts_on_2_threads(serve: Any) -> None:
    """Each request fans out to a coroutine, a timer and an offloaded call in one yield."""
    arrived: list[int] = []
    lock = threading.Lock()
    all_in: Future[None] = Future()
    n = 100

    async def coro(i: int) -> int:
        await asyncio.wrap_future(all_in)  # done only when all n requests are suspended
        return i

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        i = int(environ["PATH_INFO"][1:])
        fut = bridge.gather(coro(i), bridge.sleep(0.001, "t"), bridge.offload(pow, i, 2))
        with lock:
            arrived.append(i)
            if len(arrived) == n:
                all_in.set_result(None)
        yield fut
        a, b, c = fut.result()
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield f"{a} {b} {c}".encode()

    server = serve(app, threads=2)
    results = get_many(server.port, [f"/{i}" for i in range(n)], timeout=60)
    assert results == [(200, f"{i} t {i * i}".encode()) for i in range(n)]


def test_client_disconnect_cancels_the_bridged_coroutine(serve: Any) -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def slow_upstream() -> bytes:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"never"

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        fut = bridge.run(slow_upstream())
        yield fut
        start_response("200 OK", [])
        yield fut.result()

    server = serve(app, threads=2)
    import socket

    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert started.wait(10)
    sock.close()
    assert cancelled.wait(10)


def test_sleeps_share_one_timer_and_finish_in_deadline_order(fresh: Bridge) -> None:
    order: list[float] = []
    futs = [fresh.sleep(d, d) for d in (0.15, 0.05, 0.1, 0.0)]
    cancelled = fresh.sleep(0.02, "never")
    assert cancelled.cancel()
    for f in futs:
        f.add_done_callback(lambda f: order.append(f.result()))
    assert [f.result(10) for f in futs] == [0.15, 0.05, 0.1, 0.0]
    assert order == [0.0, 0.05, 0.1, 0.15]
    assert cancelled.cancelled()
