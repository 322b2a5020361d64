"""Logging through the real CLI: WSGI+'s loggers only, --log-config, the startup banner."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_supervisor import get, spawn  # noqa: F401 (spawn is a fixture)

from wsgiplus import __version__
from wsgiplus.shell.banner import banner_lines
from wsgiplus.shell.config import Config

LOGGING_APP = '''
import logging

lib = logging.getLogger("somelib")  # a library logging every call at INFO, as httpx does
mine = logging.getLogger("myapp")  # an app that configures its own logger, as Django does
handler = logging.StreamHandler()
handler.setFormatter(logging.Formatter("MYAPP %(message)s"))
mine.addHandler(handler)
mine.setLevel(logging.INFO)


def app(environ, start_response):
    lib.info("HTTP Request: GET http://upstream/ 200")
    mine.info("handled %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''


def test_the_root_logger_is_the_apps(spawn, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "logapp.py").write_text(LOGGING_APP)
    proc = spawn(["-m", "wsgiplus", "logapp:app", "--bind", "127.0.0.1:0", "--log-level", "DEBUG"], tmp_path)
    port = proc.port()
    assert get(port, "/x") == (200, "ok")
    proc.wait_for(r'"GET /x HTTP/1\.1" 200')
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "HTTP Request" not in proc.output  # the library's INFO lines stay off
    assert proc.output.count("handled /x") == 1  # the app's own handler, and only it
    assert "MYAPP handled /x" in proc.output


DICT_CONFIG = {
    "version": 1,
    "formatters": {"custom": {"format": "CUSTOM %(levelname)s %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "custom", "stream": "ext://sys.stderr"}},
    "loggers": {"wsgiplus.error": {"handlers": ["err"], "level": "INFO", "propagate": False}},
}

INI_CONFIG = """
[loggers]
keys = root, wsgiplus

[handlers]
keys = err

[formatters]
keys = custom

[logger_root]
handlers =

[logger_wsgiplus]
qualname = wsgiplus.error
handlers = err
propagate = 0
level = INFO

[handler_err]
class = StreamHandler
formatter = custom
args = (sys.stderr,)

[formatter_custom]
format = CUSTOM %(levelname)s %(message)s
"""


def _toml(config: dict) -> str:
    f, h = config["formatters"]["custom"], config["handlers"]["err"]
    return (f'version = 1\n[formatters.custom]\nformat = "{f["format"]}"\n'
            f'[handlers.err]\nclass = "{h["class"]}"\nformatter = "custom"\nstream = "{h["stream"]}"\n'
            f'[loggers."wsgiplus.error"]\nhandlers = ["err"]\nlevel = "INFO"\npropagate = false\n')


@pytest.mark.parametrize("kind", ["json", "toml", "ini"])
def test_log_config_file(spawn, tmp_path: Path, kind: str) -> None:  # noqa: F811
    text = {"json": json.dumps(DICT_CONFIG), "toml": _toml(DICT_CONFIG), "ini": INI_CONFIG}[kind]
    (tmp_path / f"logging.{kind}").write_text(text)
    proc = spawn(["-m", "wsgiplus", "--bind", "127.0.0.1:0", "--log-config", f"logging.{kind}"], tmp_path)
    port = int(proc.wait_for(r"^CUSTOM INFO WSGI\+ listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    assert get(port, "/")[0] == 200
    proc.wait_for(r'"GET / HTTP/1\.1" 200')  # the access log is untouched by that file
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_bad_log_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    for name in ("bad.json", "missing.ini"):
        result = subprocess.run([sys.executable, "-m", "wsgiplus", "--log-config", name], cwd=tmp_path,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert result.stderr.startswith(f"wsgiplus: log config {name}: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_banner(spawn, tmp_path: Path, workers: str) -> None:  # noqa: F811
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.wsgiplus]\nthreads = 3\n')
    proc = spawn(["-m", "wsgiplus", "--bind", "127.0.0.1:0", "--workers", workers], tmp_path)
    port = int(proc.wait_for(r"serving on http://127\.0\.0\.1:(\d+)$")[0].group(1))
    out = proc.output
    assert re.search(rf"WSGI\+ {re.escape(__version__)} on \w+ [\d.]+\w*, (uvloop|asyncio) event loop", out)
    if workers == "1":
        assert re.search(r"app wsgiplus\.demo:app: one process \(pid \d+\) x 3 threads", out)
    else:
        assert re.search(r"app wsgiplus\.demo:app: 2 worker processes x 3 threads, supervisor pid \d+", out)
    found = f"settings: defaults < {tmp_path / 'pyproject.toml'} [tool.wsgiplus] (found in the working directory)"
    assert found + " < command line" in out
    assert "[WARNING] no app given: serving the built-in demo (wsgiplus.demo:app)" in out
    proc.wait_for("press Ctrl-C to stop")
    assert get(port, "/")[0] == 200
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_banner_lines_warn_about_every_interface_and_say_https() -> None:
    config = Config(app="myapp:app", certfile="c.pem", keyfile="k.pem")
    lines = banner_lines(config, ["0.0.0.0:8000", "[::]:8001", "127.0.0.1:8002", "unix:/run/x.sock"],
                         loop="asyncio")
    text = [line for _, line in lines]
    assert "serving on https://0.0.0.0:8000" in text and "serving on https://127.0.0.1:8002" in text
    assert "serving on unix:/run/x.sock" in text
    warnings = [line for level, line in lines if level == logging.WARNING]
    assert len(warnings) == 2 and all("every network interface" in w for w in warnings)
    assert warnings[0].startswith("0.0.0.0:8000 ") and warnings[1].startswith("[::]:8001 ")
    assert not any("demo" in line for line in text)
