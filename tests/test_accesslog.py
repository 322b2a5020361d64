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
