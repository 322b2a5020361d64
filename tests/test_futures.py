"""wsgiplus.runner.futures.Future: a lighter concurrent.futures.Future that behaves the same."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import tracemalloc

import pytest

from wsgiplus.runner.futures import Future


def test_is_a_concurrent_future_and_blocks_like_one() -> None:
    fut: Future[int] = Future()
    assert isinstance(fut, concurrent.futures.Future)
    threading.Timer(0.05, fut.set_result, args=(7,)).start()
    assert fut.result(timeout=10) == 7  # a thread really waits: the condition is made then
    failing: Future[int] = Future()
    threading.Timer(0.05, failing.set_exception, args=(ValueError("x"),)).start()
    with pytest.raises(ValueError):
        failing.result(timeout=10)
    with pytest.raises(concurrent.futures.TimeoutError):
        Future().result(timeout=0.01)


def test_wait_as_completed_callbacks_and_cancel() -> None:
    futs = [Future() for _ in range(5)]
    seen: list[int] = []
    futs[0].add_done_callback(lambda f: seen.append(f.result()))
    for i, f in enumerate(futs):
        threading.Timer(0.01 * i, f.set_result, args=(i,)).start()
    done, pending = concurrent.futures.wait(futs, timeout=10)
    assert len(done) == 5 and not pending
    assert sorted(f.result() for f in concurrent.futures.as_completed(futs, timeout=10)) == list(range(5))
    assert seen == [0]
    c = Future()
    assert c.cancel() and c.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        c.result()


def test_asyncio_can_await_it() -> None:
    fut: Future[str] = Future()

    async def main() -> str:
        asyncio.get_running_loop().call_later(0.01, fut.set_result, "awaited")
        return await asyncio.wrap_future(fut)

    assert asyncio.run(main()) == "awaited"


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="sizes are CPython's")
def test_it_is_lighter_than_the_standard_one() -> None:
    def cost(factory: type) -> float:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep = [factory() for _ in range(1000)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del keep
        return (after - before) / 1000

    light, standard = cost(Future), cost(concurrent.futures.Future)
    assert light < standard / 2, (light, standard)
    print(f"\nbytes per future: wsgiplus {light:.0f}, concurrent.futures {standard:.0f}")
