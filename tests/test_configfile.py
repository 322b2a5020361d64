"""TOML settings: ``--config file.toml`` and ``[tool.wsgiplus]`` in pyproject.toml, checked and applied."""

from __future__ import annotations

import http.client
import re
import signal
from pathlib import Path

import pytest
from test_supervisor import APP_SOURCE, spawn  # noqa: F401 (spawn is a fixture)

from wsgiplus.shell.configfile import ConfigFileError, coerce, load_file, parse_size


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_values_are_converted_to_config_types(tmp_path: Path) -> None:
    f = write(tmp_path / "w.toml", '''
app = "mod:app"
bind = "127.0.0.1:9000"
uds = "/tmp/w.sock"
threads = 4
max-body-size = "10m"
body_spool_size = 65536
request-timeout = 0
suspend_timeout = 2.5
max_suspended = 500
proxy_headers = true
forwarded-allow-ips = "10.0.0.0/8, 192.168.1.1"
reload-dir = ["src"]
access_log_format = "common"
''')
    assert load_file(f) == {
        "app": "mod:app",
        "bind": ["127.0.0.1:9000", "unix:/tmp/w.sock"],
        "threads": 4,
        "max_body_size": 10 * 1024 * 1024,
        "body_spool_size": 65536,
        "request_timeout": None,  # 0 turns an optional limit off
        "suspend_timeout": 2.5,
        "max_suspended": 500,
        "proxy_headers": True,
        "forwarded_allow_ips": ["10.0.0.0/8", "192.168.1.1"],
        "reload_dirs": ["src"],
        "access_log_format": "common",
    }


def test_pyproject_table_and_a_wsgiplus_table(tmp_path: Path) -> None:
    py = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.wsgiplus]\nworkers = 3\n')
    assert load_file(py) == {"workers": 3}
    other = write(tmp_path / "pyproject2.toml", '[wsgiplus]\nthreads = 2\n[other]\nthreads = "no"\n')
    assert load_file(other) == {"threads": 2}
    bare = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert load_file(bare) == {}  # a pyproject without the table says nothing


@pytest.mark.parametrize(("text", "message"), [
    ("treads = 4", r"unknown setting 'treads'"),
    ("threads = 'four'", r"setting 'threads': want an integer, got 'four'"),
    ("proxy_headers = 'maybe'", r"setting 'proxy_headers': want true or false"),
    ("max_body_size = 'lots'", r"setting 'max_body_size': want a size"),
    ("threads = ", r"not valid TOML"),
])
def test_mistakes_name_the_file_and_the_setting(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "bad.toml", text + "\n")
    with pytest.raises(ConfigFileError, match=message) as info:
        load_file(f)
    assert str(f) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="no such config file"):
        load_file(tmp_path / "nope.toml")


def test_sizes_and_coercion_helpers() -> None:
    assert parse_size("512k") == 512 * 1024 and parse_size("1g") == 1024**3 and parse_size("2MB") == 2 * 1024**2
    assert coerce("blocking_warn", "off") is None
    assert coerce("max_connections", 0) is None
    assert coerce("fds", 3) == [3]
    with pytest.raises(ValueError):
        coerce("workers", True)


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


SCRIPT_APP = '''
def app(environ, start_response):
    body = f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}|{environ['REMOTE_ADDR']}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def test_config_file_values_take_effect_and_the_command_line_wins(spawn, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "scriptapp.py").write_text(SCRIPT_APP)
    access = tmp_path / "access.log"
    write(tmp_path / "wsgiplus.toml", f'''
app = "scriptapp:app"
bind = "127.0.0.1:0"
threads = 5
root-path = "/mounted"
proxy_headers = true
forwarded_allow_ips = "127.0.0.1"
access-logfile = "{access}"
access-log-format = "%(h)s %(U)s %(s)s"
log-level = "debug"
''')
    proc = spawn(["-m", "wsgiplus", "--config", "wsgiplus.toml", "--threads", "3"], tmp_path)
    listening = proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+) \((\d+) threads")[0]
    port = int(listening.group(1))
    assert listening.group(2) == "3"  # the command line beats the file's 5
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/mounted/x", headers={"X-Forwarded-For": "198.51.100.4"})
    assert conn.getresponse().read() == b"/mounted|/x|198.51.100.4"
    conn.close()
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert access.read_text() == "198.51.100.4 /x 200\n"


def test_pyproject_in_the_working_directory_is_read(spawn, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "plusapp.py").write_text(APP_SOURCE)
    write(tmp_path / "pyproject.toml", '''
[project]
name = "demo"

[tool.wsgiplus]
app = "plusapp:app"
bind = ["127.0.0.1:0"]
workers = 2
threads = 2
''')
    proc = spawn(["-m", "wsgiplus"], tmp_path)
    proc.wait_for(r"2 worker processes x 2 threads, supervisor pid \d+")
    proc.wait_for(r"settings: defaults < .*pyproject\.toml \[tool\.wsgiplus\] \(found in the working directory\)$")
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+) \(2 threads")[0].group(1))
    assert re.fullmatch(r"v1 \d+", get(port, "/")[1])
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_bad_config_file_stops_startup_with_a_clear_message(spawn, tmp_path: Path) -> None:  # noqa: F811
    write(tmp_path / "bad.toml", "workers = 'many'\n")
    proc = spawn(["-m", "wsgiplus", "--config", "bad.toml"], tmp_path)
    assert proc.wait(20) == 2
    assert "bad.toml: setting 'workers': want an integer, got 'many'" in proc.output
