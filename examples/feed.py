"""A message feed: long-poll and server-sent events holding thousands of clients on a few threads.

    wsgiplus examples.feed:app --threads 4

* ``POST /publish`` with the message as the body: stores it, wakes every waiter.
* ``GET /poll?after=ID``: the messages after ``ID`` as JSON; if there are none
  yet, waits (suspended, on a future) until one is published or 25 s pass.
* ``GET /events``: a ``text/event-stream`` of every new message. Between
  messages the response is parked with ``wsgi.pause_output`` and woken by
  ``resume()`` from the publishing thread.
* ``GET /stats``: how many clients are waiting right now.

No waiting client holds a thread, so ``--threads 4`` serves as many as the
server's connection limit allows. A client that disconnects has its
generator closed, which unregisters it.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from wsgiplus import bridge
from wsgiplus.compat import portable

POLL_TIMEOUT = 25.0


class Broker:
    """The last 1000 messages and who waits for the next one; safe from any thread."""

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._messages: deque[tuple[int, str]] = deque(maxlen=keep)
        self._last_id = 0
        self._futures: set[Future[None]] = set()
        self._resumes: set[Callable[[], None]] = set()

    def publish(self, text: str) -> int:
        with self._lock:
            self._last_id += 1
            self._messages.append((self._last_id, text))
            futures, self._futures = self._futures, set()
            resumes, self._resumes = self._resumes, set()
        for fut in futures:
            _wake(fut)
        for resume in resumes:
            resume()
        return self._last_id

    def since(self, after: int) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": i, "text": t} for i, t in self._messages if i > after]

    def next_message(self, timeout: float) -> Future[None]:
        """A future done at the next publish (or after ``timeout``, whichever is first)."""
        fut: Future[None] = Future()
        with self._lock:
            self._futures.add(fut)
        timer = bridge.sleep(timeout)
        timer.add_done_callback(lambda _: self._timed_out(fut))
        fut.add_done_callback(lambda _: (timer.cancel(), self._discard(fut)))
        return fut

    def _timed_out(self, fut: Future[None]) -> None:
        with self._lock:  # whoever takes it out of the set wakes it: publish or the timer
            if fut not in self._futures:
                return
            self._futures.discard(fut)
        _wake(fut)

    def _discard(self, fut: Future[None]) -> None:
        with self._lock:
            self._futures.discard(fut)

    def watch(self, resume: Callable[[], None]) -> None:
        with self._lock:
            self._resumes.add(resume)

    def unwatch(self, resume: Callable[[], None]) -> None:
        with self._lock:
            self._resumes.discard(resume)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._futures) + len(self._resumes)


def _wake(fut: Future[None]) -> None:
    if fut.set_running_or_notify_cancel():  # False: the waiter gave up (client gone)
        fut.set_result(None)


broker = Broker()


def _json(start_response: Any, status: str, data: Any) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def poll(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    query = dict(p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p)
    after = int(query.get("after") or 0)
    messages = broker.since(after)
    if not messages:
        yield broker.next_message(POLL_TIMEOUT)
        messages = broker.since(after)
    yield from _json(start_response, "200 OK", {"messages": messages})


def events(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    last = int(environ.get("HTTP_LAST_EVENT_ID") or 0)
    yield b": connected\n\n"
    resume: Callable[[], None] | None = None
    try:
        while True:
            resume = environ["wsgi.pause_output"]()
            broker.watch(resume)  # registered before we look: no message can slip between
            for message in broker.since(last):
                last = message["id"]
                yield f"id: {last}\ndata: {message['text']}\n\n".encode()
            yield b""  # parked here until publish() calls resume()
            broker.unwatch(resume)
    finally:
        if resume is not None:
            broker.unwatch(resume)


@portable
def app(environ: dict[str, Any], start_response: Any) -> Any:
    path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
    if path == "/publish" and method == "POST":
        text = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
        return _json(start_response, "200 OK", {"id": broker.publish(text)})
    if path == "/poll":
        return poll(environ, start_response)
    if path == "/events":
        return events(environ, start_response)
    if path == "/stats":
        return _json(start_response, "200 OK", {"waiting": broker.waiting})
    return _json(start_response, "404 Not Found", {"error": "no such feed endpoint"})
