"""The seam between the runner and the wire: one ``Stream`` per exchange.

An *exchange* is one request and its response: an HTTP/1.1 request on a
keep-alive connection, an HTTP/2 stream, later a WebSocket. The ``Runner``
(runner.py) drives the app and talks to its exchange only through the
``Stream`` below; the protocol side (server.py's ``HTTPConnection`` for
HTTP/1.1, and HTTP/2 or WebSocket connections) subclasses ``Stream`` and owns
everything about the wire: framing, error pages, keep-alive, ``100 Continue``,
flow control, and the access record's status and byte count.

Threads (the whole contract is in docs/spec.md, "Threading contract"):

* ``start`` / ``data`` / ``end`` are called on the **pool thread** running the
  request's current step. Steps of one request never overlap, so these calls
  are serialised, but they are not on the loop. A subclass frames there when
  framing needs no shared state (HTTP/1.1), or queues a neutral item for the
  loop to encode (HTTP/2, whose connection object is not thread-safe).
  Either way the item goes into the stream's *outbox* with ``_push``.
* ``flush``, ``complete``, ``error``, ``abort`` are called on the **loop
  thread**. ``flush`` hands the outbox to ``deliver`` (the subclass writes it
  to its transport or its h2 connection).
* The protocol side tells the runner about the wire, on the loop thread, with
  ``pause()`` / ``resume()`` (per-stream writability) and ``disconnect()``;
  the runner receives them as ``on_writable()`` / ``on_disconnect()``.

The runner keeps its batching: a step pushes chunks and asks for at most one
flush wake-up at a time (``request_flush``), and the step's own end-of-step
wake-up flushes what is left, so a burst of chunks costs one
``call_soon_threadsafe``, and a chunk is handed over before the app is asked
for the next one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, ClassVar, Protocol

from .._compiled import mypyc_attr

__all__ = [
    "NO_ENVIRON",
    "OUTBOX_HIGH_WATER",
    "ExchangeRecord",
    "ResponseHead",
    "Stream",
    "StreamConsumer",
]

# The environ of a record (or runner) that has none yet, or no longer: shared,
# never written to (saves a dict per request).
NO_ENVIRON: dict[str, Any] = {}

# Past this many bytes waiting in a stream's outbox the runner parks the
# request (holding no thread) until the stream is writable again.
OUTBOX_HIGH_WATER = 256 * 1024


class ResponseHead:
    """The app's status and headers, validated once; protocol-neutral.

    ``status_code`` and ``headers`` are what an HTTP/2 stream encodes;
    ``h1_lines()`` is the HTTP/1.1 serialisation (status line and the app's
    own fields), computed on first use and kept in ``h1``, so the head cache
    in runner.py keeps HTTP/1.1's speed. ``h2`` is a free slot for the HTTP/2
    side to cache its encoded header list the same way.

    ``headers`` are the app's fields as sent, without a ``Connection: close``
    (``wsgi.check_headers`` keeps only that hop-by-hop field): it becomes
    ``close`` - the exchange is the last on its connection (HTTP/1.1 closes
    after it; HTTP/2 may ignore it or GOAWAY) - and each protocol writes its
    own connection-level fields.

    Instances are shared between threads (the cache hands one to every
    request with the same head); the lazy fields are idempotent, so two
    threads computing them at once store equal values.
    """

    __slots__ = ("status", "headers", "status_code", "content_length", "close", "h1", "h2")

    def __init__(self, status: str, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.status_code = int(status[:3])
        content_length = None
        close = False
        for name, value in headers:
            n = len(name)
            if n == 14 and name.lower() == "content-length":
                content_length = int(value)
            elif n == 10 and name.lower() == "connection":
                close = True
        if close:
            headers = [h for h in headers if h[0].lower() != "connection"]
        self.headers = headers
        self.content_length = content_length
        self.close = close
        self.h1: bytes | None = None
        self.h2: Any = None

    def h1_lines(self) -> bytes:
        """``HTTP/1.1 <status>\\r\\n`` and the app's fields, each ending in CRLF."""
        lines = self.h1
        if lines is None:
            parts = ["HTTP/1.1 ", self.status, "\r\n"]
            for name, value in self.headers:
                parts += (name, ": ", value, "\r\n")
            lines = self.h1 = "".join(parts).encode("latin-1")
        return lines

    # the name HTTP/1.1 code used before the seam
    @property
    def lines(self) -> bytes:
        return self.h1_lines()


class ExchangeRecord:
    """What the access log (and metrics) know about one exchange, and nothing else.

    Filled by the protocol side: request fields when the request arrives
    (loop thread), ``status`` / ``response_headers`` / ``bytes_sent`` as the
    response goes out (the pool thread that frames it, or the loop), and
    ``ended_at`` when the exchange is over. The access log reads it on the
    loop thread once the exchange is over, which is after every write to it.

    ``environ`` is the request's WSGI environ: atoms such as ``%({name}i)s``,
    ``%(u)s`` and ``%({key}e)s`` read request headers and keys from it.
    """

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "protocol",
        "remote",
        "environ",
        "status",
        "response_headers",
        "bytes_sent",
        "started_at",
        "ended_at",
    )

    def __init__(self, method: str, remote: tuple[str, int] | None = None) -> None:
        self.method = method
        self.remote = remote
        # the rest of the request side is set from the environ when the app is called
        # (``Connection.run_exchange``): the raw target as RAW_URI, PATH_INFO, ...
        self.target = ""
        self.path = ""
        self.query = ""
        self.protocol = ""  # "HTTP/1.1", "HTTP/1.0", "HTTP/2"
        self.environ: dict[str, Any] = NO_ENVIRON
        self.status: int | None = None  # status code sent (or to be sent)
        self.response_headers: list[tuple[str, str]] = []
        self.bytes_sent = 0  # body bytes sent, as gunicorn's %(b)s
        self.started_at = 0.0  # time.monotonic() when the app was called
        self.ended_at: float | None = None

    @property
    def duration(self) -> float:
        """Seconds from the request's arrival to the end of its response (or now)."""
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        return max(0.0, end - self.started_at) if self.started_at else 0.0


class StreamConsumer(Protocol):
    """What a stream tells its runner (loop thread)."""

    def on_writable(self) -> None: ...

    def on_disconnect(self) -> None: ...


# what every stream holds (Stream.__slots__ and Stream.FIELDS)
_STREAM_FIELDS = ("loop", "record", "consumer", "paused", "disconnected", "_lock", "outbox", "_out_size",
                  "flush_posted")


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed by pure-Python classes
class Stream:
    """One exchange's response path, subclassed by each protocol.

    Fields:

    * ``record`` - the exchange's ``ExchangeRecord``.
    * ``paused`` - True while this stream should not be given more data
      (HTTP/1.1: the transport's buffer is over its high-water mark; HTTP/2:
      the stream's flow-control window or buffer). Written on the loop by
      ``pause()`` / ``resume()``; pool threads read it as a hint (the runner
      re-checks it on the loop before parking).
    * ``disconnected`` - the peer is gone (or the stream was reset). Written
      once, on the loop, by ``disconnect()``; read anywhere.
    * ``consumer`` - the runner, told about ``resume()`` and ``disconnect()``.

    Subclasses implement ``start``, ``data``, ``end`` (pool thread),
    ``deliver``, ``complete``, ``error``, ``abort`` (loop thread).
    """

    __slots__ = _STREAM_FIELDS
    # the same names, readable in the compiled build too (its classes have no __slots__):
    # what __init__ sets, and a subclass that inlines it must set
    FIELDS: ClassVar[tuple[str, ...]] = _STREAM_FIELDS

    def __init__(self, loop: asyncio.AbstractEventLoop, record: ExchangeRecord) -> None:
        self.loop = loop
        self.record = record
        self.consumer: StreamConsumer | None = None
        self.paused = False
        self.disconnected = False
        # the outbox: pushed by pool threads, taken by the loop, under _lock. One
        # lock per exchange: the runner guards its own cross-thread fields with it too.
        self._lock = threading.Lock()
        self.outbox: list[Any] | None = None  # made with the first item: most waits have none
        self._out_size = 0
        self.flush_posted = False

    # -- pool thread: the response, as the app produces it ------------------

    def start(self, head: ResponseHead, known_length: int | None) -> bool:
        """Begin the response with ``head``; ``known_length`` is the whole body's
        size when the runner knows it already (a one-element list), else None.

        Called once, with the first body bytes (``data`` follows at once) or
        at the end for an empty body (``end`` follows). Returns what ``_push``
        returns.
        """
        raise NotImplementedError

    def data(self, data: bytes) -> bool:
        """One non-empty body chunk. Returns False when the runner should stop
        asking the app for more (outbox over its high-water mark, or paused)."""
        raise NotImplementedError

    def end(self) -> None:
        """The body is complete (the app's iterable is exhausted)."""
        raise NotImplementedError

    # True when ``send_file`` may be called: the protocol can send a file from its
    # descriptor (HTTP/1.1 on plain TCP or a Unix socket, not TLS, not HTTP/2)
    @property
    def takes_files(self) -> bool:
        return False

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """The body is ``count`` bytes of the regular file ``fd`` from ``offset`` (pool thread;
        only when ``takes_files``, after ``start``). The stream queues it in the outbox;
        ``deliver`` sends it, and ``resume()`` is called when it is sent (until then the
        stream is ``paused``). The file stays open until the runner's next step."""
        raise NotImplementedError

    def informational(self, status: int, headers: list[tuple[str, str]]) -> None:
        """A 1xx before the head (``wsgi.early_hints``: 103), fields already checked.
        Pool thread. A protocol that cannot send it ignores it (the default)."""

    # -- any thread ------------------------------------------------------------

    def _push(self, item: Any, size: int) -> bool:
        """Queue ``item`` (``size`` bytes of it count against the high-water mark)."""
        with self._lock:
            out = self.outbox
            if out is None:
                self.outbox = [item]
            else:
                out.append(item)
            self._out_size = total = self._out_size + size
        return total <= OUTBOX_HIGH_WATER and not self.paused

    @property
    def buffered(self) -> int:
        """Bytes pushed and not yet flushed (a hint when read off the loop)."""
        return self._out_size

    @property
    def has_output(self) -> bool:
        return self.outbox is not None

    def request_flush(self) -> None:
        """Pool thread: have the loop flush soon; at most one such wake-up is pending."""
        with self._lock:
            if self.flush_posted or not self.outbox:
                return
            self.flush_posted = True
        self.loop.call_soon_threadsafe(self.flush)

    # -- loop thread -------------------------------------------------------------

    def flush(self) -> None:
        """Hand everything in the outbox to ``deliver``."""
        with self._lock:
            out = self.outbox
            self.outbox = None
            self._out_size = 0
            self.flush_posted = False
        if out and not self.disconnected:
            self.deliver(out)

    def deliver(self, items: list[Any]) -> None:
        """Write the outbox's items (in order) to the wire."""
        raise NotImplementedError

    def complete(self) -> None:
        """The runner is done and the response ended normally (``end`` was pushed
        and flushed). The protocol finishes the exchange: access record, keep-alive,
        the next request."""
        raise NotImplementedError

    def error(self, status: int, reason: str = "") -> None:
        """The runner failed before the head was sent (500 app error, 503 overload,
        504 deadline): the protocol answers with its own error response (with its
        ``Server`` header, counted in the record) and finishes the exchange."""
        raise NotImplementedError

    def abort(self, reason: str) -> None:
        """The response cannot be completed (app error after the head, disconnect,
        deadline after the head): cut it so the client never sees a complete-looking
        wrong response (HTTP/1.1 closes the connection, HTTP/2 resets the stream),
        and finish the exchange."""
        raise NotImplementedError

    # -- loop thread, called by the protocol side ------------------------------

    def pause(self) -> None:
        """The wire cannot take more for now."""
        self.paused = True

    def resume(self) -> None:
        """The wire can take more: a runner parked on writability goes on."""
        self.paused = False
        consumer = self.consumer
        if consumer is not None:
            consumer.on_writable()

    def disconnect(self) -> None:
        """The peer is gone (or reset this stream): the runner stops the app."""
        if self.disconnected:
            return
        self.disconnected = True
        consumer = self.consumer
        if consumer is not None:
            consumer.on_disconnect()

    def is_disconnected(self) -> bool:
        """``environ['wsgiplus.client_disconnected']``."""
        return self.disconnected
