"""The flags a gunicorn or uvicorn user types, through the real CLI, and ``-c gunicorn.conf.py``."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_supervisor import APP_SOURCE, READY, get, spawn  # noqa: F401 (spawn is a fixture)

from wsgiplus.shell.cli import build_parser, load_settings
from wsgiplus.shell.gunicornconf import UNLIMITED


def parse(*argv: str):
    return load_settings(build_parser().parse_args(list(argv)), {})


def test_gunicorn_and_uvicorn_spellings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse("--keep-alive", "7", "--limit-request-line", "0", "--limit-request-fields", "50",
                   "--limit-request-field_size", "0", "--worker-connections", "100", "--ssl-certfile", "c.pem",
                   "--ssl-keyfile", "k.pem", "--ssl-keyfile-password", "pw", "--timeout-graceful-shutdown", "3",
                   "--access-logformat", "common", "--log-file", "err.log", "--limit-max-requests", "9").config
    assert config.keepalive_timeout == 7.0
    assert (config.max_request_line, config.max_header_count, config.max_header_size) == (UNLIMITED, 50, UNLIMITED)
    assert (config.max_connections, config.certfile, config.keyfile, config.keyfile_password) == \
        (100, "c.pem", "k.pem", "pw")
    assert (config.graceful_timeout, config.access_log_format, config.error_logfile, config.max_requests) == \
        (3.0, "common", "err.log", 9)
    assert parse("--keepalive", "8").config.keepalive_timeout == 8.0
    assert parse("--http-protocols", "h1").config.http2 is False
    config = parse("--http-protocols", "h2,h1", "--http2-max-concurrent-streams", "250",
                   "--http2-initial-window-size", "1048576", "--http2-max-header-list-size", "32768").config
    assert (config.http2, config.h2_max_concurrent_streams, config.h2_initial_window_size,
            config.h2_max_header_list_size) == (True, 250, 1048576, 32768)
    assert parse("--timeout-keep-alive", "9").config.keepalive_timeout == 9.0
    assert parse("--limit-request-field-size", "100").config.max_header_size == 100
    assert parse("--host", "::1", "--port", "9000").config.bind == ["[::1]:9000"]
    assert parse("--port", "9001").config.bind == ["127.0.0.1:9001"]
    assert parse("--host", "0.0.0.0").config.bind == ["0.0.0.0:8000"]
    config = parse("--pythonpath", "a,b", "--app-dir", "c", "-e", "A=1", "--env", "B=x=y", "--pid", "s.pid",
                   "--preload", "-w", "2").config
    assert config.pythonpath == [str(tmp_path / d) for d in "abc"]
    assert (config.env, config.pidfile, config.preload) == (["A=1", "B=x=y"], "s.pid", True)
    settings = parse("--timeout", "30")
    assert settings.config.request_timeout is None  # explained, not mapped
    assert len(settings.warnings) == 1 and "--timeout 30 ignored" in settings.warnings[0]
    assert "--request-timeout" in settings.warnings[0]


@pytest.mark.parametrize(("argv", "message"), [
    (["--env", "NOEQUALS"], "env 'NOEQUALS': want KEY=VALUE"),
    (["--preload", "--reload"], "preload and reload do not go together"),
    (["--env-file", "missing.env"], "env_file missing.env: no such file"),
    (["--chdir", "nowhere"], "--chdir nowhere: No such file or directory"),
])
def test_bad_process_flags_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "wsgiplus", *argv], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


ENV_APP = '''
import os


def app(environ, start_response):
    body = "|".join([os.environ.get("GREETING", "-"), os.environ.get("OTHER", "-"), os.getcwd()]).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.mark.parametrize("workers", ["1", "2"])
def test_process_flags_through_the_cli(spawn, tmp_path: Path, workers: str) -> None:  # noqa: F811
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "envapp.py").write_text(ENV_APP)
    (project / ".env").write_text('# comment\nGREETING=from-file\nexport OTHER="a quoted value"\n')
    proc = spawn(["-m", "wsgiplus", "envapp:app", "--chdir", "proj", "--pythonpath", "src",
                  "--host", "127.0.0.1", "--port", "0", "--pid", "server.pid", "--env", "GREETING=hi",
                  "--env-file", ".env", "--limit-request-line", "64", "--keep-alive", "7", "--timeout", "30",
                  "--workers", workers], tmp_path)
    port = proc.port()
    if workers == "2":
        proc.wait_for(READY, count=2)
    assert get(port, "/") == (200, f"hi|a quoted value|{project}")  # --env beats the file
    assert (project / "server.pid").read_text().strip() == str(proc.pid)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/" + "x" * 100)
    assert conn.getresponse().status == 414  # --limit-request-line
    conn.close()
    assert "--timeout 30 ignored" in proc.output
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not (project / "server.pid").exists()


PRELOAD_APP = '''
import os

IMPORTED_IN = os.getpid()


def app(environ, start_response):
    body = f"{IMPORTED_IN} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.mark.parametrize("preload", [True, False])
def test_preload_imports_in_the_supervisor(spawn, tmp_path: Path, preload: bool) -> None:  # noqa: F811
    (tmp_path / "preapp.py").write_text(PRELOAD_APP)
    proc = spawn(["-m", "wsgiplus", "preapp:app", "--bind", "127.0.0.1:0", "--workers", "2",
                  *(["--preload"] if preload else [])], tmp_path)
    port = proc.port()
    proc.wait_for(READY, count=2)
    imported, worker = map(int, get(port, "/")[1].split())
    assert worker != proc.pid
    assert (imported == proc.pid) is preload and (imported == worker) is not preload
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


GUNICORN_CONF = '''
import multiprocessing

bind = "127.0.0.1:0"
workers = 2
threads = 3
wsgi_app = "plusapp:app"
keepalive = 4
accesslog = "-"
loglevel = "INFO"
timeout = 120
worker_class = "gthread"
raw_env = ["GREETING=conf"]
helper = multiprocessing.cpu_count()  # the file's own variable: not a setting, not warned about


def post_fork(server, worker):
    pass
'''


def test_gunicorn_conf_py(spawn, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "plusapp.py").write_text(APP_SOURCE)
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF)
    proc = spawn(["-m", "wsgiplus", "-c", "gunicorn.conf.py", "--threads", "2"], tmp_path)
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+) \(2 threads")[0].group(1))  # flag wins
    proc.wait_for(READY, count=2)  # workers = 2 from the file
    assert re.fullmatch(r"v1 \d+", get(port, "/")[1])
    proc.wait_for(r'"GET / HTTP/1\.1" 200')  # accesslog = "-"
    warnings = proc.matches(r"\[WARNING\] gunicorn\.conf\.py: gunicorn settings WSGI\+ ignores: (.*) \(see")
    assert len(warnings) == 1 and warnings[0].group(1) == "post_fork, timeout, worker_class"
    assert "settings: defaults < gunicorn.conf.py (gunicorn) < command line" in proc.output
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("workers = 'many'\n", "gunicorn.conf.py: setting 'workers': want an integer, got 'many'"),
    ("import nosuchmodule\n", "gunicorn.conf.py: the gunicorn config file failed: ModuleNotFoundError"),
])
def test_a_bad_gunicorn_conf_py_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "gunicorn.conf.py").write_text(text)
    result = subprocess.run([sys.executable, "-m", "wsgiplus", "-c", "gunicorn.conf.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_gunicorn_accesslog_none_turns_the_access_log_off(tmp_path: Path) -> None:
    from wsgiplus.shell.gunicornconf import translate

    values, ignored = translate({"accesslog": None, "errorlog": "-", "limit_request_line": 0,
                                 "worker_class": "wsgiplus.gunicorn.Worker", "daemon": True})
    assert values == {"access_log": False, "error_logfile": None, "max_request_line": UNLIMITED}
    assert ignored == ["daemon"]
    values, _ = translate({"http_protocols": ["h1"], "http2_max_concurrent_streams": 50})
    assert values == {"http2": False, "h2_max_concurrent_streams": 50}
    assert translate({"http_protocols": "h2, h1"})[0] == {"http2": True}


def test_the_migration_page_tells_the_truth_about_flags() -> None:
    """Every flag the page says WSGI+ takes is taken; every flag it says WSGI+ lacks is refused."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "migration.md").read_text()
    known = {flag for action in build_parser()._actions for flag in action.option_strings}
    token = re.compile(r"`(-{1,2}[A-Za-z][A-Za-z0-9_-]*)`")
    taken, lacking = set(), set()
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) < 2:
            continue
        theirs, ours = token.findall(cells[0]), token.findall(cells[1])
        if cells[1].startswith("same"):
            taken |= set(theirs) | set(ours)
        elif cells[1] == "—":
            lacking |= set(theirs)
        else:
            taken |= set(ours)
    assert len(taken) > 40 and len(lacking) > 10
    assert sorted(taken - known) == []
    from wsgiplus.shell.cli import REFUSED

    refused = {flag for flags, _ in REFUSED for flag in flags}
    assert sorted((lacking & known) - refused) == []  # absent, or refused with the reason


@pytest.mark.parametrize(("argv", "message"), [
    (["-k", "gthread"], "-k: the wsgiplus command is the worker; to keep gunicorn's arbiter, run gunicorn -k"),
    (["--worker-class=sync"], "--worker-class: the wsgiplus command is the worker"),
    (["--daemon"], "--daemon: WSGI+ does not daemonize"),
    (["-u", "www-data"], "-u: WSGI+ does not switch users"),
])
def test_gunicorn_flags_without_an_equivalent_say_why(argv: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "wsgiplus", *argv, "myapp:app"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith(f"wsgiplus: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
