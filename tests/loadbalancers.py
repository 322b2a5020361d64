"""Real load balancers (nginx, HAProxy) in front of WSGI+ for tests, and looping clients.

Each balancer runs from its own temporary directory (config, pid, logs, temp
files), in the foreground, on an ephemeral loopback port, and is killed in
teardown. Nothing touches /etc, /var or /run.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def upstream_line(backend: str) -> str:
    """``127.0.0.1:8000`` or ``unix:/path`` as nginx's ``server`` wants it."""
    return f"server {backend} max_fails=1 fail_timeout=2s;"


NGINX_CONF = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 64m;

    upstream wsgiplus {{
        {servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        {tls}
        location / {{
            proxy_pass http://wsgiplus;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 60s;
        }}
        location /ws/ {{
            proxy_pass http://wsgiplus;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
        }}
        location /buffered/ {{
            proxy_pass http://wsgiplus;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


class Balancer:
    """A balancer process; ``port`` is where clients connect."""

    def __init__(self, proc: subprocess.Popen, port: int, prefix: Path, log: Path) -> None:
        self.proc, self.port, self.prefix, self.log = proc, port, prefix, log
        self.tls_port = 0

    def error_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _start(argv: list[str], port: int, prefix: Path, log: Path) -> Balancer | None:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(prefix / "stderr.log", "w"), start_new_session=True)  # noqa: SIM115
    balancer = Balancer(proc, port, prefix, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None  # most likely the port was taken meanwhile: the caller retries
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return balancer
        except OSError:
            time.sleep(0.05)
    balancer.stop()
    raise AssertionError("the balancer did not start:\n" + (prefix / "stderr.log").read_text())


def _user_line() -> str:
    # a root master would switch its workers to "nobody", who cannot use our temp dirs
    return f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""


def start_nginx(prefix: Path, backends: list[str], conf: str = NGINX_CONF,
                tls: tuple[Path, Path] | None = None) -> Balancer:
    """nginx in front of ``backends`` (``127.0.0.1:PORT`` or ``unix:/path``).

    With ``tls`` (cert, key) it also terminates TLS on ``balancer.tls_port``.
    """
    assert NGINX is not None
    prefix.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port, tls_port = free_port(), free_port()
        tls_lines = ""
        if tls is not None:
            tls_lines = (f"listen 127.0.0.1:{tls_port} ssl; ssl_certificate {tls[0]}; "
                         f"ssl_certificate_key {tls[1]};")
        text = conf.format(user=_user_line(), prefix=prefix, port=port, tls=tls_lines,
                           servers="\n        ".join(upstream_line(b) for b in backends))
        (prefix / "nginx.conf").write_text(text)
        balancer = _start([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                           "-g", "daemon off;"], port, prefix, prefix / "error.log")
        if balancer is not None:
            balancer.tls_port = tls_port
            return balancer
    raise AssertionError("nginx did not start:\n" + (prefix / "stderr.log").read_text())


HAPROXY_CONF = """\
global
    maxconn 1024
    log stderr format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    retries 3
    option redispatch
frontend www
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    default_backend wsgiplus
backend wsgiplus
    balance roundrobin
    http-reuse always
    option httpchk GET /readyz
    {servers}
"""


def start_haproxy(prefix: Path, backends: list[tuple[str, str | None]], conf: str = HAPROXY_CONF) -> Balancer:
    """HAProxy in front of ``backends``: (``127.0.0.1:PORT``, health check ``HOST:PORT`` or None)."""
    assert HAPROXY is not None
    prefix.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (addr, check) in enumerate(backends):
        line = f"server b{i} {addr}"
        if check:
            host, _, cport = check.rpartition(":")
            line += f" check inter 200ms fall 1 rise 1 port {cport}"
        lines.append(line)
    for _ in range(5):
        port = free_port()
        text = conf.format(port=port, servers="\n    ".join(lines))
        (prefix / "haproxy.cfg").write_text(text)
        balancer = _start([HAPROXY, "-db", "-f", str(prefix / "haproxy.cfg")], port, prefix,
                          prefix / "stderr.log")
        if balancer is not None:
            return balancer
    raise AssertionError("haproxy did not start:\n" + (prefix / "stderr.log").read_text())


class LoopingClients:
    """Threads that send requests through a balancer in a loop, counting every outcome.

    A failure is anything but a 200 with the expected body: a 502/503/504, a
    reset, a timeout. Each client keeps its own keep-alive connection to the
    balancer and reconnects when the balancer closes it. Bounded by ``seconds``
    and ``max_requests`` each.
    """

    def __init__(self, port: int, gets: int, posts: int, seconds: float = 20.0,
                 max_requests: int = 20000, path: str = "/") -> None:
        self.port, self.seconds, self.max_requests, self.path = port, seconds, max_requests, path
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.failures: list[str] = []
        self.backends: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=("GET", i), daemon=True) for i in range(gets)]
        self.threads += [threading.Thread(target=self._loop, args=("POST", i), daemon=True) for i in range(posts)]

    def start(self) -> LoopingClients:
        self.deadline = time.monotonic() + self.seconds
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(30)

    def _loop(self, method: str, n: int) -> None:
        conn: http.client.HTTPConnection | None = None
        count = 0
        while not self._stop.is_set() and time.monotonic() < self.deadline and count < self.max_requests:
            count += 1
            body = f"{method}-{n}-{count}-".encode() * (1 + count % 50) if method == "POST" else None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request(method, self.path, body=body)
                resp = conn.getresponse()
                data = resp.read()
                good = resp.status == 200 and (body is None or data.split(b" ", 1)[-1] == str(len(body)).encode())
                outcome = f"{resp.status} {data[:80]!r}"
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                good, outcome, data = False, repr(exc), b""
                conn.close()
                conn = None
            with self._lock:
                if good:
                    self.ok[method] += 1
                    self.backends[data.split(b" ", 1)[0].decode()] += 1
                else:
                    self.failed[method] += 1
                    self.failures.append(f"{method} {outcome}")
        if conn is not None:
            conn.close()

    def summary(self) -> str:
        return ", ".join(f"{m}: {self.ok[m]} ok / {self.failed[m]} failed" for m in ("GET", "POST"))


@contextlib.contextmanager
def running(clients: LoopingClients) -> Iterator[LoopingClients]:
    clients.start()
    try:
        yield clients
    finally:
        clients.stop()


def until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# The app behind the balancer in the rolling-restart tests: GET answers "NAME ok",
# POST "NAME <bytes received>", so a client can check its whole body arrived.
LB_APP = '''
import os

NAME = os.environ["INSTANCE"]


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read()
        out = f"{NAME} {len(body)}".encode()
    else:
        out = f"{NAME} ok".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
'''


class Backend:
    """``python -m wsgiplus`` on a fixed address, restartable; output in a file."""

    def __init__(self, name: str, bind: str, cwd: Path, args: list[str]) -> None:
        self.name, self.bind, self.cwd, self.args = name, bind, cwd, args
        self.log_path = cwd / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Backend:
        env = dict(os.environ, INSTANCE=self.name, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        self.starts += 1
        with open(self.log_path, "a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wsgiplus", "lbapp:app", "--bind", self.bind, *self.args],
                cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> None:
        if not until(lambda: len(re.findall(pattern, self.log())) >= count, timeout):
            raise AssertionError(f"no {count} x {pattern!r} in {self.name}'s log:\n{self.log()[-3000:]}")

    def wait_serving(self, timeout: float = 30.0) -> None:
        workers = int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1
        if workers > 1:
            self.wait_log(r"worker pid \d+ ready", count=workers * self.starts, timeout=timeout)
        else:
            self.wait_log(r"WSGI\+ listening on", count=self.starts, timeout=timeout)

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def rolling_restart(backends: list[Backend], start_balancer: Callable[[], Balancer],
                    gets: int = 6, posts: int = 2, reload: bool = True) -> LoopingClients:
    """Clients loop through the balancer while each backend is stopped and started, then reloaded
    (SIGHUP, ``--workers 2``; without ``reload``: stopped and started again).

    Each step waits until the balancer sends the backend requests again (asserted,
    bounded) and lets the load run a little (up to 2,000 more or 3 s). Asserts
    that no client request failed; returns the clients for their counts.
    """
    balancer = None
    clients = None
    try:
        for b in backends:
            b.start()
        for b in backends:
            b.wait_serving()
        balancer = start_balancer()
        clients = LoopingClients(balancer.port, gets=gets, posts=posts, seconds=60, max_requests=20000).start()

        def serves(b: Backend) -> None:
            mark = clients.backends[b.name]
            assert until(lambda: clients.backends[b.name] > mark, 30), (b.name, clients.summary())
            until(lambda: clients.backends[b.name] > mark + 2000, 3)  # not asserted: just dwell

        for step in ("restart", "reload") if reload else ("restart", "restart"):
            for b in backends:
                serves(b)
                if step == "restart":  # graceful stop, wait for the exit, start again
                    assert b.stop(60) == 0, b.log()[-3000:]
                    b.start()
                    b.wait_serving()
                else:  # SIGHUP: fresh workers; the old ones drain
                    b.signal(signal.SIGHUP)
                    b.wait_log(r"worker pid \d+ ready", count=2 * b.starts + 2)
                serves(b)
        clients.stop()
        summary = clients.summary()
        assert clients.ok["GET"] > 0 and clients.ok["POST"] > 0, summary
        assert not clients.failures, (summary, clients.failures[:5], balancer.error_log()[-3000:])
        return clients
    finally:
        if clients is not None:
            clients.stop()
        if balancer is not None:
            balancer.stop()
        for b in backends:
            b.kill()
