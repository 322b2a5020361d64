"""The runner alone, driven through a fake stream, loop and pool: no sockets, no timing."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from fakes import FakeLoop, FakePool, RecordingStream, drive

from wsgiplus.runner.core import (
    _TRANSITIONS,
    OUTBOX_HIGH_WATER,
    IllegalTransition,
    Runner,
    State,
    Suspensions,
)
from wsgiplus.runner.wsgi import environ_template, make_environ


class Closing:
    """An iterable whose close() calls are counted."""

    def __init__(self, items: Iterator[Any] | list[Any]) -> None:
        self.items = iter(items)
        self.closed = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self.items)

    def close(self) -> None:
        self.closed += 1


class Harness:
    def __init__(self, app: Callable[..., Any], *, method: str = "GET", timeout: float | None = None,
                 suspensions: Suspensions | None = None) -> None:
        self.loop = FakeLoop()
        self.pool = FakePool()
        self.stream = RecordingStream(self.loop, method)
        self.runner = Runner(app, self.stream, self.loop, self.pool, timeout=timeout,  # type: ignore[arg-type]
                             suspensions=suspensions)
        self.environ = make_environ(
            environ_template("test", "80", "http", "", False),
            method=method, target=b"/p?q=1", path=b"/p", query=b"q=1", headers=[(b"host", b"t")],
            http_version="1.1", body=None, remote=("127.0.0.1", 1),
            client_disconnected=self.stream.is_disconnected, pause_output=self.runner.pause_output,
            early_hints=self.runner.early_hints,
        )

    def start(self) -> Harness:
        self.runner.start(self.environ)
        return self

    def drive(self) -> Harness:
        drive(self.loop, self.pool)
        return self


def ok_head(start_response: Callable[..., Any], length: int | None = None) -> None:
    headers = [("Content-Type", "text/plain")]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    start_response("200 OK", headers)


def test_list_app_sends_head_body_end_and_completes_once() -> None:
    body = Closing([b"hello"])

    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        return body

    h = Harness(app).start().drive()
    assert h.stream.outcome == ("complete", None)
    assert h.stream.wire == [("head", 200), b"hello", ("end",)]
    assert h.runner.state == State.FINISHED and body.closed == 1


def test_one_element_list_gets_a_known_length() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        return [b"hello"]

    h = Harness(app).start().drive()
    assert h.stream.known_length == 5


def test_empty_body_starts_at_the_end_with_length_zero() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("204 No Content", [])
        return []

    h = Harness(app).start().drive()
    assert h.stream.known_length == 0 and h.stream.wire == [("head", 204), ("end",)]
    assert h.stream.outcome == ("complete", None)


def test_generator_chunks_are_handed_over_before_the_next_one_with_one_wakeup_per_burst() -> None:
    seen_pending: list[bool] = []
    h: Harness

    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        yield b"a"
        # PEP 3333: the first chunk is on its way to the loop before the app is asked again
        seen_pending.append(any(fn == h.stream.flush for fn, _ in h.loop.ready))
        yield b"b"
        seen_pending.append(any(fn == h.stream.flush for fn, _ in h.loop.ready))
        yield b"c"

    h = Harness(app).start()
    h.pool.run_jobs()  # the whole generator runs in one step
    assert seen_pending == [True, True]
    assert h.loop.wakeups == 2  # one flush wake-up for the burst + the step's own
    h.drive()
    assert h.stream.body == b"abc" and h.stream.outcome == ("complete", None)


def test_future_suspends_without_a_job_and_resumes_when_done() -> None:
    fut: Future = Future()
    body = Closing([])

    def app(environ: dict, start_response: Any) -> Any:
        def gen() -> Iterator[Any]:
            yield fut
            ok_head(start_response)
            yield fut.result()
        body.items = gen()
        return body

    gate = Suspensions()
    h = Harness(app, suspensions=gate).start().drive()
    assert h.runner.state == State.SUSPENDED and gate.count == 1
    assert not h.pool.jobs and h.stream.outcome is None
    fut.set_result(b"later")  # any thread: only posts a wake-up
    h.drive()
    assert h.stream.body == b"later" and h.stream.outcome == ("complete", None)
    assert gate.count == 0 and body.closed == 1


def test_a_done_future_does_not_give_the_thread_back() -> None:
    fut: Future = Future()
    fut.set_result(b"x")

    def app(environ: dict, start_response: Any) -> Any:
        yield fut
        ok_head(start_response)
        yield fut.result()

    h = Harness(app).start()
    assert h.pool.run_jobs() == 1
    h.drive()
    assert h.stream.body == b"x"


def test_pause_output_parks_until_resume() -> None:
    resumes: list[Callable[[], None]] = []

    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        resumes.append(environ["wsgi.pause_output"]())
        yield b"one"
        yield b""
        yield b"two"

    h = Harness(app).start().drive()
    assert h.runner.state == State.PAUSED and not h.pool.jobs and h.stream.body == b"one"
    resumes[0]()
    h.drive()
    assert h.stream.body == b"onetwo" and h.stream.outcome == ("complete", None)


def test_resume_before_the_empty_chunk_does_not_park() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        environ["wsgi.pause_output"]()()  # pause and resume at once
        yield b""
        yield b"done"

    h = Harness(app).start().drive()
    assert h.stream.body == b"done" and h.stream.outcome == ("complete", None)


def test_backpressure_parks_on_a_paused_stream_and_resumes_on_writable() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        yield b"1"
        yield b"2"

    h = Harness(app)
    h.stream.pause()  # the wire is full before the first byte
    h.start().drive()
    assert h.runner.state == State.DRAINING and not h.pool.jobs
    assert h.stream.wire == [("head", 200), b"1"]  # flushed to the protocol, which holds it
    h.stream.resume()
    h.drive()
    assert h.stream.body == b"12" and h.stream.outcome == ("complete", None)


def test_a_full_outbox_ends_the_step_but_a_writable_stream_goes_on_at_once() -> None:
    big = b"x" * (OUTBOX_HIGH_WATER + 1)

    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        yield big
        yield b"tail"

    h = Harness(app).start()
    h.pool.run_jobs()
    h.loop.run_ready()  # the step ended at the high-water mark; not paused: a new step
    assert h.runner.state == State.RUNNING and len(h.pool.jobs) == 1
    h.drive()
    assert h.stream.body == big + b"tail"


def test_app_error_before_the_head_asks_the_stream_for_a_500() -> None:
    body = Closing([])

    def app(environ: dict, start_response: Any) -> Any:
        def gen() -> Iterator[bytes]:
            raise RuntimeError("boom")
            yield b""
        body.items = gen()
        return body

    h = Harness(app).start().drive()
    assert h.stream.outcome == ("error", 500) and h.stream.wire == []
    assert body.closed == 1 and h.runner.state == State.FINISHED


def test_app_error_after_the_head_aborts() -> None:
    body = Closing([])

    def app(environ: dict, start_response: Any) -> Any:
        def gen() -> Iterator[bytes]:
            ok_head(start_response)
            yield b"partial"
            raise RuntimeError("boom")
        body.items = gen()
        return body

    h = Harness(app).start().drive()
    assert h.stream.outcome == ("abort", "app error") and h.stream.body == b"partial"
    assert body.closed == 1


def test_a_non_bytes_item_is_an_app_error() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        return ["text"]

    h = Harness(app).start().drive()
    assert h.stream.outcome == ("error", 500)


def test_disconnect_while_suspended_cancels_the_future_and_closes_once() -> None:
    fut: Future = Future()
    body = Closing([fut])

    def app(environ: dict, start_response: Any) -> Any:
        return body

    gate = Suspensions()
    h = Harness(app, suspensions=gate).start().drive()
    assert h.runner.state == State.SUSPENDED
    h.stream.disconnect()
    assert h.runner.state == State.CLOSING and fut.cancelled() and gate.count == 0
    h.drive()
    assert body.closed == 1 and h.stream.outcome == ("abort", "disconnect")
    h.stream.disconnect()  # twice: nothing more
    assert len(h.stream.outcomes) == 1 and h.environ["wsgiplus.client_disconnected"]()


def test_disconnect_while_running_is_seen_at_the_next_item() -> None:
    h: Harness
    body = Closing([])

    def app(environ: dict, start_response: Any) -> Any:
        def gen() -> Iterator[bytes]:
            ok_head(start_response)
            h.stream.disconnect()  # the loop marks it while the step runs
            yield b"a"
            yield b"never"
        body.items = gen()
        return body

    h = Harness(app)
    h.start().drive()
    assert h.stream.outcome == ("abort", "disconnect") and body.closed == 1
    assert b"never" not in h.stream.body


def test_deadline_while_suspended_answers_504_and_closes() -> None:
    fut: Future = Future()
    body = Closing([fut])

    def app(environ: dict, start_response: Any) -> Any:
        return body

    h = Harness(app, timeout=5.0).start().drive()
    h.loop.advance(4.9)
    assert h.runner.state == State.SUSPENDED
    h.loop.advance(0.2)
    h.drive()
    assert h.stream.outcome == ("error", 504) and fut.cancelled() and body.closed == 1


def test_deadline_after_the_head_aborts() -> None:
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        yield b"started"
        yield fut

    h = Harness(app, timeout=1.0).start().drive()
    h.loop.advance(1.0)
    h.drive()
    assert h.stream.outcome == ("abort", "deadline") and h.stream.body == b"started"


def test_max_suspended_refuses_with_503() -> None:
    fut: Future = Future()
    body = Closing([fut])

    def app(environ: dict, start_response: Any) -> Any:
        return body

    h = Harness(app, suspensions=Suspensions(limit=0)).start().drive()
    assert h.stream.outcome == ("error", 503) and fut.cancelled() and body.closed == 1


def test_suspend_timeout_answers_504() -> None:
    fut: Future = Future()

    def app(environ: dict, start_response: Any) -> Any:
        return [fut]

    gate = Suspensions(timeout=2.0)
    h = Harness(app, suspensions=gate).start().drive()
    h.loop.advance(2.0)
    h.drive()
    assert h.stream.outcome == ("error", 504) and gate.count == 0


def test_a_future_done_after_the_stop_is_ignored() -> None:
    fut: Future = Future()
    body = Closing([fut])

    def app(environ: dict, start_response: Any) -> Any:
        return body

    h = Harness(app).start().drive()
    h.stream.disconnect()
    h.drive()
    fut.set_result(None) if not fut.done() else None
    h.drive()
    assert body.closed == 1 and len(h.stream.outcomes) == 1


def test_legacy_write_sends_before_the_iterable() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        write = start_response("200 OK", [])
        write(b"w")
        return [b"i"]

    h = Harness(app).start().drive()
    assert h.stream.body == b"wi" and h.stream.outcome == ("complete", None)


def test_early_hints_go_to_the_stream_before_the_head_only() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        environ["wsgi.early_hints"]([("Link", "</a.css>; rel=preload")])
        ok_head(start_response)
        yield b"x"
        environ["wsgi.early_hints"]([("Link", "</late>")])  # after the head: ignored

    h = Harness(app).start().drive()
    assert h.stream.hints == [(103, [("Link", "</a.css>; rel=preload")])]
    assert h.stream.outcome == ("complete", None)


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        ok_head(start_response)
        ok_head(start_response)
        return []

    h = Harness(app).start().drive()
    assert h.stream.outcome == ("error", 500)


def test_the_runner_adds_no_environ_keys_and_removes_its_own_at_the_end() -> None:
    seen: list[dict] = []

    def app(environ: dict, start_response: Any) -> Any:
        seen.append(dict(environ))
        ok_head(start_response)
        return []

    h = Harness(app)
    before = dict(h.environ)
    h.start().drive()
    assert seen == [before]  # make_environ is the only place keys are set
    # finished: the keys bound to the runner are gone (an environ the app keeps holds no runner)
    assert set(before) - set(h.environ) == {"wsgi.pause_output", "wsgiplus.pause_output", "wsgi.early_hints"}


def test_a_finished_request_is_freed_without_the_cyclic_gc() -> None:
    futs: list[Future] = [Future()]

    def app(environ: dict, start_response: Any) -> Any:
        yield futs[0]
        ok_head(start_response)
        yield b"x"

    class Probe:
        pass

    class App:  # the app object only the runner holds: it goes when the runner goes
        def __call__(self, environ: dict, start_response: Any) -> Any:
            return app(environ, start_response)

    gc.disable()
    try:
        h = Harness(App())
        h.environ["probe"] = Probe()
        h.stream.record.environ = h.environ  # as the connection does
        h.start().drive()
        futs[0].set_result(None)
        h.drive()
        assert h.stream.outcome == ("complete", None)
        # (the compiled build's Runner takes no weak reference: its app stands for it)
        runner_ref = weakref.ref(h.runner.app)
        env_ref = weakref.ref(h.environ["probe"])
        stream_ref = weakref.ref(h.stream)
        h.stream.record.environ = {}  # what the connection does after the access log
        del h
        futs.clear()  # (a done concurrent Future keeps its callbacks, so the runner with it)
        assert runner_ref() is None and env_ref() is None and stream_ref() is None
    finally:
        gc.enable()


# -- the state table -----------------------------------------------------------


def test_every_transition_outside_the_table_is_refused() -> None:
    r = Harness(lambda e, s: []).runner
    for old in State:
        for new in State:
            r.state = old
            if new in _TRANSITIONS[old]:
                r._to(new)
                assert r.state == new
            else:
                with pytest.raises(IllegalTransition):
                    r._to(new)
                assert r.state == old


def test_finished_is_final_and_a_runner_starts_once() -> None:
    h = Harness(lambda e, s: (s("200 OK", []), [])[1]).start().drive()
    assert h.runner.state == State.FINISHED and _TRANSITIONS[State.FINISHED] == ()
    with pytest.raises(IllegalTransition):
        h.runner.start(h.environ)


def test_the_parked_states_and_the_reserved_input_wait_state_lead_back_to_running() -> None:
    for parked in (State.SUSPENDED, State.DRAINING, State.PAUSED, State.READING):
        assert set(_TRANSITIONS[parked]) == {State.RUNNING, State.CLOSING}
