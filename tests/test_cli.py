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

from wsgiplus.cli import build_parser, config_from_args
from wsgiplus.config import Config


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
