"""The command line: a flag for every setting, precedence, clear errors, and real runs."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_supervisor import READY, spawn  # noqa: F401 (spawn is a fixture)

from wsgiplus.shell.cli import build_parser, config_from_args
from wsgiplus.shell.config import Config


def parse(*argv: str, environ: dict[str, str] | None = None) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)), environ or {})


def test_every_config_field_has_a_flag() -> None:
    dests = {action.dest for action in build_parser()._actions}
    assert Config.field_names() - dests == set()


def test_defaults_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml here
    config = parse()
    assert config.app == "wsgiplus.demo:app" and config.bind == ["127.0.0.1:8000"] and config.threads == 8
    config = parse("mod:app", "-w", "3", "--max-requests", "100", "--max-requests-jitter", "10",
                   "--reload", "--reload-dir", "src", "--certfile", "c.pem", "--keyfile", "k.pem",
                   "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8,::1", "--access-logfile", "-",
                   "--access-log-format", "common", "--error-logfile", "err.log", "--log-json",
                   "--max-suspended", "1000", "--suspend-timeout", "30", "--blocking-warn", "0",
                   "--max-connections", "500", "--max-body-size", "10m", "--uds", "/tmp/x.sock",
                   "-b", "127.0.0.1:0", "--no-server-header", "--request-timeout", "60")
    assert (config.app, config.workers, config.max_requests, config.max_requests_jitter) == ("mod:app", 3, 100, 10)
    assert config.reload and config.reload_dirs == [str(tmp_path / "src")]
    assert (config.certfile, config.keyfile) == ("c.pem", "k.pem")
    assert config.proxy_headers and config.forwarded_allow_ips == ["10.0.0.0/8", "::1"]
    assert (config.access_logfile, config.access_log_format, config.error_logfile, config.log_json) == \
        ("-", "common", "err.log", True)
    assert (config.max_suspended, config.suspend_timeout, config.blocking_warn) == (1000, 30.0, None)
    assert (config.max_connections, config.max_body_size) == (500, 10 * 1024 * 1024)
    assert config.bind == ["127.0.0.1:0", "unix:/tmp/x.sock"]
    assert config.server_header is False and config.request_timeout == 60.0


def test_precedence_default_env_file_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"FORWARDED_ALLOW_IPS": "10.1.1.1"}
    assert parse(environ=env).forwarded_allow_ips == ["10.1.1.1"]
    (tmp_path / "pyproject.toml").write_text(
        '[tool.wsgiplus]\nforwarded_allow_ips = ["10.2.2.2"]\nthreads = 5\nkeepalive_timeout = 9\n')
    config = parse(environ=env)
    assert (config.forwarded_allow_ips, config.threads, config.keepalive_timeout) == (["10.2.2.2"], 5, 9.0)
    config = parse("--forwarded-allow-ips", "10.3.3.3", "-t", "2", environ=env)
    assert (config.forwarded_allow_ips, config.threads, config.keepalive_timeout) == (["10.3.3.3"], 2, 9.0)
    (tmp_path / "other.toml").write_text("threads = 7\n")
    assert parse("--config", "other.toml").threads == 7  # --config replaces pyproject.toml


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "0"], "threads must be at least 1"),
    (["--workers", "0"], "workers must be at least 1"),
    (["--forwarded-allow-ips", "localhost"], "'localhost' is not an IP address"),
    (["--access-log-format", "%(h"], "bad access log format"),
    (["--max-body-size", "lots"], "want a size"),
    (["--keyfile", "k.pem"], "keyfile given without certfile"),
])
def test_bad_settings_exit_with_a_clear_message(argv: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "wsgiplus", *argv], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_in_process_demo_and_sigint(spawn, tmp_path: Path) -> None:  # noqa: F811
    proc = spawn(["-m", "wsgiplus", "--bind", "127.0.0.1:0", "--threads", "1"], tmp_path)
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    assert get(port, "/")[0] == 200
    status, body = get(port, "/wait?seconds=0.05")
    assert status == 200 and body.startswith(b"waited")
    assert not proc.matches("supervisor")  # one worker, no reload: no supervisor process
    proc.wait_for(r'^127\.0\.0\.1 - - \[.+\] "GET /wait\?seconds=0\.05 HTTP/1\.1" 200 \d+ "-" "-"$')
    proc.send(signal.SIGHUP)  # no supervisor to reload with: said, and ignored
    proc.wait_for("SIGHUP ignored")
    assert get(port, "/")[0] == 200
    proc.send(signal.SIGINT)
    assert proc.wait(30) == 0


def test_fd_socket_activation_with_workers(spawn, tmp_path: Path) -> None:  # noqa: F811
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        proc = spawn(["-m", "wsgiplus", "--fd", str(listener.fileno()), "--workers", "2"], tmp_path,
                     pass_fds=(listener.fileno(),))
        proc.wait_for(READY, count=2)
    finally:
        listener.close()  # the server holds its own copy now
    assert get(port, "/")[0] == 200
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_unix_socket_with_workers_is_removed_on_exit(spawn, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "w.sock"
    proc = spawn(["-m", "wsgiplus", "--uds", str(path), "--workers", "2"], tmp_path)
    proc.wait_for(READY, count=2)
    assert unix_get(path).startswith(b"HTTP/1.1 200 ")
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not path.exists()


def test_tls_with_workers(spawn, tmp_path: Path) -> None:  # noqa: F811
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    (tmp_path / "schemeapp.py").write_text(
        "def app(environ, start_response):\n"
        "    body = environ['wsgi.url_scheme'].encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    proc = spawn(["-m", "wsgiplus", "schemeapp:app", "--bind", "127.0.0.1:0", "--workers", "2",
                  "--certfile", str(cert), "--keyfile", str(key)], tmp_path)
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    proc.wait_for(READY, count=2)
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", "/")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"https")
    conn.close()
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def unix_get(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:  # not there yet (FileNotFoundError), or bound but not listening
            return False
    return True


def test_log_level_warning_keeps_info_lines_out(spawn, tmp_path: Path) -> None:  # noqa: F811
    from conftest import wait_for

    path = tmp_path / "s.sock"
    proc = spawn(["-m", "wsgiplus", "--uds", str(path), "--workers", "2", "--log-level", "warning"], tmp_path)
    # the file appears at bind(), a moment before listen(): wait until it accepts connections
    assert wait_for(lambda: _accepts(path), timeout=20)
    assert unix_get(path).startswith(b"HTTP/1.1 200 ")
    proc.wait_for(r'"GET / HTTP/1\.1" 200')  # the access log is not an info line of the error log
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "[INFO]" not in proc.output


def run_cli(argv: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsgiplus", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(("bind", "problem"), [
    ("127.0.0.1:http", "bind '127.0.0.1:http': the port 'http' is not a number from 0 to 65535"),
    ("127.0.0.1:70000", "the port '70000' is not a number"),
    ("::1:8000", "an IPv6 address goes in brackets"),
    ("[nope]:80", "'nope' is not an IPv6 address"),
    ("unix:", "no path after 'unix:'"),
    ("host name:80", "want HOST:PORT"),
    ("nosuchhost.invalid:8000", "cannot listen on nosuchhost.invalid:8000: unknown host 'nosuchhost.invalid'"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_bind_is_one_line_and_exit_status_2(bind: str, problem: str, workers: str, tmp_path: Path) -> None:
    result = run_cli(["--bind", bind, "--workers", workers], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_naming_the_bind(workers: str, tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        result = run_cli(["--bind", f"127.0.0.1:{port}", "--workers", workers], tmp_path)
    finally:
        taken.close()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in lines[0]


def test_bind_spellings_gunicorn_users_type() -> None:
    from wsgiplus.server.listeners import parse_bind

    assert parse_bind("localhost") == ("tcp", "localhost", 8000)  # gunicorn: the port defaults to 8000
    assert parse_bind(":9000") == ("tcp", "0.0.0.0", 9000)
    assert parse_bind("9000") == ("tcp", "127.0.0.1", 9000)
    assert parse_bind("[::1]") == ("tcp", "::1", 8000)
    assert parse_bind("[::]:80") == ("tcp", "::", 80)


def test_localhost_bind_serves(spawn, tmp_path: Path) -> None:  # noqa: F811
    proc = spawn(["-m", "wsgiplus", "--bind", "localhost:0", "--threads", "1"], tmp_path)
    m = proc.wait_for(r"serving on http://(127\.0\.0\.1|\[::1\]):(\d+)$")[0]
    host = m.group(1).strip("[]")
    conn = http.client.HTTPConnection(host, int(m.group(2)), timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


BROKEN_APP = '''
def load_settings():
    raise RuntimeError("no config for you")


load_settings()
'''


def _error_block(stderr: str) -> list[str]:
    """The lines of stderr without the log prefix ('[time] [pid] [LEVEL] ')."""
    import re

    return [re.sub(r"^\[[^]]+\] \[\d+\] \[[A-Z]+\] ", "", line) for line in stderr.splitlines()]


def test_an_app_that_fails_to_import_prints_the_same_short_error_for_1_and_n_workers(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN_APP)
    one = run_cli(["broken:app", "--bind", "127.0.0.1:0"], tmp_path)
    two = run_cli(["broken:app", "--bind", "127.0.0.1:0", "--workers", "2"], tmp_path)
    assert one.returncode == two.returncode == 3
    block = _error_block(one.stderr)
    assert block[0] == "cannot load the app 'broken:app':"
    assert block[1] == "Traceback (most recent call last):"
    assert block[-1] == "RuntimeError: no config for you"
    text = "\n".join(block)
    assert text.count("Traceback") == 1 and "broken.py" in text and "load_settings" in text
    assert "importlib" not in text and "wsgiplus" not in text and "direct cause" not in text
    assert len(block) <= 8, one.stderr
    lines = _error_block(two.stderr)
    start = lines.index(block[0])
    assert lines[start:start + len(block)] == block  # the same block, once
    assert "\n".join(lines).count("Traceback") == 1
    assert any("worker failed to boot" in line for line in lines)


def test_a_missing_module_is_one_line_for_1_and_n_workers(tmp_path: Path) -> None:
    for workers in ("1", "2"):
        result = run_cli(["nosuchmodule:app", "--bind", "127.0.0.1:0", "--workers", workers], tmp_path)
        assert result.returncode == 3
        errors = [line for line in _error_block(result.stderr) if "cannot load the app" in line]
        assert errors == ["cannot load the app 'nosuchmodule:app': cannot import module 'nosuchmodule' "
                          "(from 'nosuchmodule:app')"], result.stderr
        assert "Traceback" not in result.stderr


def test_log_level_in_any_case_and_help_shows_each_default_once(tmp_path: Path) -> None:
    assert parse("--log-level", "DEBUG").log_level == "debug"
    assert parse("--log-level", "Warning").log_level == "warning"
    text = " ".join(run_cli(["--help"], tmp_path).stdout.split())  # argparse wraps lines
    assert "(default: combined)" in text and "(default: off)" in text
    import re

    assert not re.search(r"\(default: [^)]*\) \(default:", text), text


def test_fields_added_to_config_get_flags_without_editing_the_cli(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Other branches add Config fields; the parser must grow a flag for each on its own."""
    import dataclasses

    import wsgiplus.shell.cli as cli
    import wsgiplus.shell.configfile as configfile

    extended = dataclasses.make_dataclass("Extended", [
        ("telemetry_bind", "str | None", dataclasses.field(default=None, metadata={"help": "where metrics go"})),
        ("http2_max_streams", "int", dataclasses.field(default=100)),
        ("shiny", "bool", dataclasses.field(default=False)),
        ("trusted_headers", "list[str]", dataclasses.field(default_factory=list)),
    ], bases=(Config,))
    monkeypatch.setattr(cli, "Config", extended)
    monkeypatch.setattr(configfile, "Config", extended)
    kinds = {f.name: (str(f.type).split("|")[0].strip(), "None" in str(f.type))
             for f in dataclasses.fields(extended)}
    monkeypatch.setattr(cli, "KINDS", kinds)
    monkeypatch.setattr(configfile, "KINDS", kinds)
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    assert "where metrics go (default: off)" in parser.format_help()
    config = cli.config_from_args(parser.parse_args(
        ["--telemetry-bind", "127.0.0.1:9100", "--http2-max-streams", "5", "--shiny",
         "--trusted-headers", "a,b", "--trusted-headers", "c"]), {})
    assert (config.telemetry_bind, config.http2_max_streams, config.shiny) == ("127.0.0.1:9100", 5, True)
    assert config.trusted_headers == ["a", "b", "c"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--http2-max-streams", "many"])


@pytest.mark.parametrize("attempt", range(5))
def test_many_workers_failing_together_print_the_error_exactly_once(tmp_path: Path, attempt: int) -> None:
    """Eight workers fail at once and are stopped mid-way: one error block, no stray tracebacks
    (a worker stopped while exiting once fell back into the supervisor's code)."""
    (tmp_path / "broken.py").write_text(BROKEN_APP)
    result = run_cli(["broken:app", "--bind", "127.0.0.1:0", "--workers", "8"], tmp_path)
    assert result.returncode == 3
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert result.stderr.count("RuntimeError: no config for you") == 1
    assert "Bad file descriptor" not in result.stderr and "SystemExit" not in result.stderr
