"""A raw HTTP/2 client over a real socket, on the h2 library (tests only)."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame


class Response:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.ended = False
        self.reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers).get(b":status", b"0"))

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class H2Client:
    """``H2Client(port)``: prior knowledge (or ``tls=context``); ``get()``, ``request()``, ``wait()``."""

    def __init__(self, port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 timeout: float = 10.0, validate: bool = True, settings: dict | None = None,
                 auto_ack: bool = True) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            raw = tls.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.timeout = timeout
        self.auto_ack = auto_ack
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=validate, normalize_outbound_headers=validate,
            validate_inbound_headers=validate))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.responses: dict[int, Response] = {}
        self.events: list[Any] = []
        self.closed = False
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", path: str = "/", headers: list | None = None,
                body: bytes | None = None, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"localhost"),
                  (b":path", path.encode()), *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.responses[sid] = Response()
        self.flush()
        if body:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send ``body`` as the windows allow (reading the server's WINDOW_UPDATEs)."""
        view = memoryview(body)
        deadline = time.monotonic() + self.timeout
        while view:
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(view))
            if n <= 0:
                assert time.monotonic() < deadline and not self.closed, "the server never opened its window"
                self.read_once(0.5)
                continue
            self.conn.send_data(sid, bytes(view[:n]), end_stream=end and n == len(view))
            view = view[n:]
            self.flush()

    def read_once(self, timeout: float | None = None) -> bool:
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        if self.terminated is not None:
            self._after_goaway(data)  # h2's client state machine takes nothing after a GOAWAY
            return True
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for ev in events:
            self.events.append(ev)
            sid = getattr(ev, "stream_id", None)
            resp = self.responses.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and resp is not None:
                resp.headers = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                if resp is not None:
                    resp.body += ev.data
                if self.auto_ack and ev.flow_controlled_length:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and resp is not None:
                resp.ended = True
            elif isinstance(ev, h2.events.StreamReset) and resp is not None:
                resp.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
        try:
            self.flush()
        except OSError:
            self.closed = True
            return False
        return True

    def _after_goaway(self, data: bytes) -> None:
        """Frames after a graceful GOAWAY (the streams in flight still finish), parsed raw."""
        buf = self._raw = getattr(self, "_raw", b"") + data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            resp = self.responses.get(frame.stream_id)
            if resp is None:
                continue
            if isinstance(frame, HeadersFrame):
                resp.headers = list(self.conn.decoder.decode(frame.data, raw=True))
            elif isinstance(frame, DataFrame):
                resp.body += frame.data
            elif isinstance(frame, RstStreamFrame):
                resp.reset = frame.error_code
            if "END_STREAM" in frame.flags:
                resp.ended = True
        self._raw = buf

    def wait(self, predicate: Any, timeout: float | None = None) -> bool:
        """Read until ``predicate()`` holds, the connection closes, or ``timeout`` passes."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return predicate()
            self.read_once(min(left, 1.0))
        return True

    def done(self, *sids: int) -> bool:
        return all(self.responses[s].ended or self.responses[s].reset is not None for s in sids)

    def get(self, path: str = "/", **kw: Any) -> Response:
        sid = self.request("GET", path, **kw)
        assert self.wait(lambda: self.done(sid)), f"no response for {path}"
        return self.responses[sid]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class RawH2:
    """Frames in, frames out, no client state machine: for conformance and attack tests.

    ``RawH2(port)`` sends the preface and an empty SETTINGS, ACKs the server's
    SETTINGS, and keeps every frame it reads in ``frames``.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, preface: bool = True) -> None:
        import hpack

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[Any] = []
        self.closed = False
        self.send_failed = False
        self._buf = b""
        if preface:
            from hyperframe.frame import SettingsFrame

            self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
            self.wait(lambda: any(isinstance(f, SettingsFrame) and "ACK" not in f.flags for f in self.frames))
            self.send(SettingsFrame(0, flags=["ACK"]))

    def send(self, *frames: Any) -> None:
        self.send_raw(b"".join(f.serialize() for f in frames))

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.send_failed = True  # what the server sent before is still read

    def headers(self, sid: int, fields: list | None = None, end_stream: bool = True,
                end_headers: bool = True, **extra: Any) -> Any:
        fields = fields if fields is not None else [
            (b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(sid, data=self.encoder.encode(fields), flags=flags, **extra)

    def read_once(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        buf = self._buf + data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            if isinstance(frame, HeadersFrame):
                frame.decoded = list(self.decoder.decode(frame.data, raw=True))
            self.frames.append(frame)
        self._buf = buf

    def wait(self, predicate: Any, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(predicate())
            self.read_once(min(left, 0.5))
        return True

    def goaway(self, timeout: float | None = None) -> Any:
        """The server's GOAWAY (waiting for it), or None if it closed without one."""
        from hyperframe.frame import GoAwayFrame

        self.wait(lambda: any(isinstance(f, GoAwayFrame) for f in self.frames), timeout)
        found = [f for f in self.frames if isinstance(f, GoAwayFrame)]
        return found[0] if found else None

    def reset(self, sid: int, timeout: float | None = None) -> Any:
        """The server's RST_STREAM for ``sid`` (waiting for it), or None."""
        self.wait(lambda: any(isinstance(f, RstStreamFrame) and f.stream_id == sid for f in self.frames), timeout)
        found = [f for f in self.frames if isinstance(f, RstStreamFrame) and f.stream_id == sid]
        return found[0] if found else None

    def response(self, sid: int, timeout: float | None = None) -> tuple[int | None, bytes]:
        """(status, body) of ``sid`` once it has ended (None status if it did not)."""
        def ended() -> bool:
            return any(f.stream_id == sid and "END_STREAM" in f.flags for f in self.frames
                       if isinstance(f, (HeadersFrame, DataFrame)))
        self.wait(ended, timeout)
        status = None
        body = b""
        for f in self.frames:
            if f.stream_id != sid:
                continue
            if isinstance(f, HeadersFrame) and status is None:
                status = int(dict(f.decoded).get(b":status", b"0"))
            elif isinstance(f, DataFrame):
                body += f.data
        return (status if ended() else None), body

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
