"""Access log lines (gunicorn atoms, presets, JSON) from a real server, and log files from the CLI."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import signal
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from test_supervisor import spawn  # noqa: F401 (a fixture)

from wsgiplus.shell.accesslog import COMBINED, COMMON, AccessLogger, resolve_format


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    logger = logging.getLogger("wsgiplus.access")
    handler = ListHandler()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    fut: Future = Future()
    fut.set_result(None)
    yield fut  # already done: passes through
    body = b"hello"
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Out", "o1"),
                                   ("Content-Length", str(len(body)))])
    yield body


def request(port: int, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_lines(lines: list[str], n: int) -> list[str]:
    from conftest import wait_for

    assert wait_for(lambda: len(lines) >= n, timeout=10), lines
    return lines


AUTH = "Basic " + base64.b64encode(b"alice:secret").decode()


def test_combined_is_the_default_and_atoms_match_gunicorn(serve, access_lines) -> None:
    server = serve(app, access_log=True)
    request(server.port, "/p?x=1", {"User-Agent": "probe/2", "Referer": "http://r/", "Authorization": AUTH})
    line = wait_lines(access_lines, 1)[0]
    assert re.fullmatch(r'127\.0\.0\.1 - alice \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /p\?x=1 HTTP/1\.1" 201 5 "http://r/" "probe/2"', line), line


def test_custom_format_with_header_environ_and_time_atoms(serve, access_lines) -> None:
    fmt = "%(m)s %(U)s %(q)s %(H)s %(s)s %(B)d in=%({x-request-id}i)s out=%({x-out}o)s " \
          "e=%({wsgiplus.version}e)s T=%(T)s D=%(D)s M=%(M)s L=%(L)s p=%(p)s missing=%({nope}i)s"
    server = serve(app, access_log=True, access_log_format=fmt)
    request(server.port, "/a?b=c", {"X-Request-Id": "rid-7"})
    line = wait_lines(access_lines, 1)[0]
    assert re.fullmatch(r"GET /a b=c HTTP/1\.1 201 5 in=rid-7 out=o1 e=\(1, 0\) T=\d+ D=\d+ M=\d+ "
                        r"L=\d+\.\d{6} p=<\d+> missing=-", line), line


def test_common_preset_and_app_error(serve, access_lines) -> None:
    server = serve(app, access_log=True, access_log_format="common")
    assert request(server.port, "/boom", {}) == 500
    line = wait_lines(access_lines, 1)[0]
    # the server's own 500 page is counted (issue 14): "500 Internal Server Error\n"
    assert re.fullmatch(r'127\.0\.0\.1 - - \[.+\] "GET /boom HTTP/1\.1" 500 26', line), line


def test_json_lines(serve, access_lines) -> None:
    server = serve(app, access_log=True, log_json=True)
    request(server.port, "/j?k=v", {"User-Agent": "probe/3"})
    data = json.loads(wait_lines(access_lines, 1)[0])
    assert data["method"] == "GET" and data["path"] == "/j?k=v" and data["status"] == 201
    assert data["bytes"] == 5 and data["user_agent"] == "probe/3" and data["remote_addr"] == "127.0.0.1"
    assert isinstance(data["duration_ms"], float) and data["protocol"] == "HTTP/1.1"


def test_access_log_off(serve, access_lines) -> None:
    server = serve(app, access_log=False)
    assert request(server.port, "/", {}) == 201
    assert AccessLogger.from_config(server.config) is None
    assert access_lines == []


def test_formats_are_checked_up_front() -> None:
    assert resolve_format(None) == COMBINED
    assert resolve_format("common") == COMMON
    assert resolve_format("%(h)s %(B)d") == "%(h)s %(B)d"
    with pytest.raises(ValueError, match="bad access log format"):
        resolve_format("%(h)s %(")


def test_cli_access_log_file_with_format(spawn, tmp_path: Path) -> None:  # noqa: F811
    access = tmp_path / "access.log"
    proc = spawn(["-m", "wsgiplus", "wsgiplus.demo:app", "--bind", "127.0.0.1:0",
                  "--access-logfile", str(access), "--access-log-format", '%(h)s "%(r)s" %(s)s'], tmp_path)
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    assert request(port, "/nowhere", {}) == 404
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert access.read_text() == '127.0.0.1 "GET /nowhere HTTP/1.1" 404\n'


def test_cli_log_files_and_json_error_log(spawn, tmp_path: Path) -> None:  # noqa: F811
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    proc = spawn(["-m", "wsgiplus", "wsgiplus.demo:app", "--bind", "127.0.0.1:0",
                  "--access-logfile", str(access), "--access-log-format", '%(h)s "%(r)s" %(s)s',
                  "--error-logfile", str(errors), "--log-json"], tmp_path)
    from conftest import wait_for

    assert wait_for(lambda: errors.exists() and "WSGI+ listening on" in errors.read_text(), timeout=20)
    first = json.loads(errors.read_text().splitlines()[0])
    assert first["level"] == "info" and first["logger"] == "wsgiplus.error" and first["pid"] > 0
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", errors.read_text()).group(1))
    assert request(port, "/nowhere", {}) == 404
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    (line,) = access.read_text().splitlines()  # --log-json: the access log is JSON too
    assert json.loads(line)["path"] == "/nowhere" and json.loads(line)["status"] == 404
    assert "nowhere" not in proc.output  # nothing went to stdout/stderr


def _burst(port: int, n: int) -> None:
    """``n`` keep-alive requests on one connection, every response read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            conn.request("GET", f"/n/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404
    finally:
        conn.close()


@pytest.mark.parametrize("stop", ["graceful", "quick", "workers"])
def test_a_burst_then_a_stop_loses_and_reorders_no_line(spawn, tmp_path: Path, stop: str) -> None:  # noqa: F811
    """Lines are batched per loop iteration: every one of them is written, in order, however the
    server stops (SIGTERM; SIGTERM twice: the quick stop; a worker's exit under the supervisor)."""
    access = tmp_path / "access.log"
    args = ["-m", "wsgiplus", "wsgiplus.demo:app", "--bind", "127.0.0.1:0",
            "--access-logfile", str(access), "--access-log-format", '"%(r)s" %(s)s']
    if stop == "workers":
        args += ["--workers", "2"]
    proc = spawn(args, tmp_path)
    port = int(proc.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    n = 300
    _burst(port, n)
    proc.send(signal.SIGTERM)
    if stop == "quick":
        proc.send(signal.SIGTERM)
    assert proc.wait(30) is not None
    lines = access.read_text().splitlines()
    assert lines == [f'"GET /n/{i} HTTP/1.1" 404' for i in range(n)]


class _NoRunLoop:
    """A loop whose callbacks never run: lines stay batched until something flushes them."""

    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.soon.append((fn, args))


def _record(i: int) -> Any:
    from wsgiplus.server.streams import ExchangeRecord

    rec = ExchangeRecord("GET", ("127.0.0.1", 1))
    rec.environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "ua", "HTTP_REFERER": "http://r/"}
    rec.target, rec.protocol, rec.status, rec.bytes_sent = f"/{i}", "HTTP/1.1", 200, i
    rec.started_at, rec.ended_at = 1.0, 1.5
    return rec


@pytest.fixture
def our_logging() -> Iterator[None]:
    """``setup_logging`` changes process-wide loggers: put them back afterwards."""
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate)
             for lg in (logging.getLogger("wsgiplus"), logging.getLogger("wsgiplus.access"),
                        logging.getLogger("wsgiplus.error"))]
    yield
    for lg, handlers, level, propagate in saved:
        for h in lg.handlers[:]:
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def _our_access_logger(tmp_path: Path, **config: Any) -> tuple[AccessLogger, Path]:
    from wsgiplus.shell.config import Config
    from wsgiplus.shell.logconfig import setup_logging

    target = tmp_path / "a.log"
    cfg = Config(access_log=True, access_logfile=str(target), **config)
    setup_logging(cfg)
    return AccessLogger.from_config(cfg), target  # type: ignore[return-value]


def test_batched_lines_are_written_by_one_flush_in_order(tmp_path: Path, our_logging: None) -> None:
    logger, target = _our_access_logger(tmp_path)
    try:
        loop = _NoRunLoop()
        conn = type("C", (), {"loop": loop})()
        for i in range(10):
            logger.log(_record(i), conn)
        assert len(loop.soon) == 1  # one flush scheduled for the batch
        assert target.read_text() == ""
        fn, args = loop.soon[0]
        fn(*args)
        lines = target.read_text().splitlines()
        assert len(lines) == 10
        assert [line.split('"')[1] for line in lines] == [f"GET /{i} HTTP/1.1" for i in range(10)]
        assert re.fullmatch(r'127\.0\.0\.1 - - \[.+\] "GET /3 HTTP/1\.1" 200 3 "http://r/" "ua"', lines[3])
        # past BATCH_MAX lines a batch is written at once
        for i in range(AccessLogger.BATCH_MAX):
            logger.log(_record(i), conn)
        assert len(target.read_text().splitlines()) == 10 + AccessLogger.BATCH_MAX
    finally:
        logger.close()


def test_logging_shutdown_writes_a_pending_batch(tmp_path: Path, our_logging: None) -> None:
    """A worker ends with ``logging.shutdown()`` (then ``os._exit``): the batch is written first."""
    logger, target = _our_access_logger(tmp_path)
    try:
        conn = type("C", (), {"loop": _NoRunLoop()})()
        for i in range(5):
            logger.log(_record(i), conn)
        for ref in reversed(logging._handlerList[:]):  # what logging.shutdown() flushes, in its order
            handler = ref()
            if handler is logger._flusher:
                handler.flush()
                break
        assert len(target.read_text().splitlines()) == 5
    finally:
        logger.close()


def test_compiled_format_matches_the_atoms_mapping() -> None:
    """The compiled text format gives what ``fmt % Atoms(record)`` gives, atom for atom."""
    from wsgiplus.shell.accesslog import _ATOMS, Atoms, compile_format

    fmt = " ".join(f"{k}=%({k})s" for k in _ATOMS if k not in ("t",)) + \
        " %(B)d %% %({user-agent}i)s %({x}o)s %({REMOTE_ADDR}e)s %(nope)s"
    fmt = resolve_format(fmt)
    rec = _record(7)
    rec.environ["HTTP_AUTHORIZATION"] = AUTH
    rec.environ["PATH_INFO"], rec.environ["QUERY_STRING"] = "/7", ""
    rec.response_headers = [("X", "1")]
    assert compile_format(fmt)(rec) == fmt % Atoms(rec)


def test_a_foreign_handler_gets_one_record_per_line(access_lines) -> None:
    """A user's handler (log_config, a test's list) sees each line as its own record, at once."""
    logger = AccessLogger()
    conn = type("C", (), {"loop": _NoRunLoop()})()
    logger.log(_record(1), conn)
    logger.log(_record(2), conn)
    assert len(access_lines) == 2 and '"GET /2 HTTP/1.1"' in access_lines[1]
    assert conn.loop.soon == []
    logger.close()
