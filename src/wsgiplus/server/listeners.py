"""Listening sockets from bind strings: ``HOST:PORT``, ``[::1]:PORT``, ``unix:/path``, ``fd://N``.

Sockets are made here, not by asyncio, so a supervisor can open them once and
hand the same sockets to every worker process it forks.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

__all__ = ["BindError", "ListenError", "bind_socket", "parse_bind", "socket_from_fd", "describe",
           "all_interfaces", "unix_socket_file", "unlink_unix_socket"]

DEFAULT_PORT = 8000  # a bind without a port, as gunicorn's


class BindError(ValueError):
    """A bind string that cannot mean anything: the bind and what is wrong (a usage error)."""

    def __init__(self, bind: str, problem: str) -> None:
        super().__init__(f"bind {bind!r}: {problem}")
        self.bind, self.problem = bind, problem


class ListenError(OSError):
    """A bind that is well formed but cannot be listened on now; ``status`` is the exit status."""

    def __init__(self, bind: str, problem: str, status: int = 1) -> None:
        super().__init__(f"cannot listen on {bind}: {problem}")
        self.bind, self.problem, self.status = bind, problem, status

    def __str__(self) -> str:
        return str(self.args[0])


def _port(bind: str, text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise BindError(bind, f"the port {text!r} is not a number from 0 to 65535")
    return int(text)


def parse_bind(bind: str) -> tuple[str, str | int, int | None]:
    """Return ``("tcp", host, port)``, ``("unix", path, None)`` or ``("fd", fd, None)``.

    ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (every interface), ``PORT`` (127.0.0.1)
    and ``HOST`` (port 8000, as gunicorn) are TCP. Raises ``BindError``.
    """
    if not isinstance(bind, str) or not bind.strip():
        raise BindError(str(bind), "empty; want HOST:PORT, [IPV6]:PORT, unix:/path or fd://N")
    if bind.startswith("unix:"):
        if not bind[5:]:
            raise BindError(bind, "no path after 'unix:'")
        return "unix", bind[5:], None
    if bind.startswith("fd://"):
        if not bind[5:].isdigit():
            raise BindError(bind, "want fd://N with N a file descriptor number")
        return "fd", int(bind[5:]), None
    if any(c.isspace() for c in bind) or "/" in bind:
        raise BindError(bind, "want HOST:PORT, [IPV6]:PORT, unix:/path or fd://N")
    if bind.startswith("["):
        host, sep, rest = bind[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BindError(bind, "want [IPV6]:PORT")
        try:
            socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            raise BindError(bind, f"{host!r} is not an IPv6 address") from None
        return "tcp", host, _port(bind, rest[1:]) if rest else DEFAULT_PORT
    if bind.count(":") > 1:
        raise BindError(bind, "an IPv6 address goes in brackets: [::1]:8000")
    host, sep, port = bind.rpartition(":")
    if not sep:
        if bind.isdigit():
            return "tcp", "127.0.0.1", _port(bind, bind)
        return "tcp", bind, DEFAULT_PORT
    return "tcp", host or "0.0.0.0", _port(bind, port)


def all_interfaces(bind: str) -> bool:
    """Whether a TCP bind listens on every interface (``0.0.0.0``, ``::``, ``:PORT``)."""
    try:
        kind, host, _ = parse_bind(bind)
    except BindError:
        return False
    return kind == "tcp" and host in ("0.0.0.0", "::", "")


_PROBLEMS = {
    errno.EADDRINUSE: ("the address is already in use (is another server running there?)", 1),
    errno.EACCES: ("permission denied (ports below 1024 need privileges)", 1),
    errno.EADDRNOTAVAIL: ("this machine has no such address", 2),
}


def bind_socket(bind: str, backlog: int = 2048) -> socket.socket:
    """A listening, non-blocking socket for ``bind``; ``BindError``/``ListenError`` say what is wrong."""
    kind, where, port = parse_bind(bind)
    if kind == "fd":
        return socket_from_fd(int(where))
    sock = None
    try:
        if kind == "unix":
            path = str(where)
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)  # a stale socket from an earlier run
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o666)
        else:
            try:
                infos = socket.getaddrinfo(str(where), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror:
                raise ListenError(bind, f"unknown host {where!r}", status=2) from None
            family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        sock.listen(backlog)
    except ListenError:
        raise
    except OSError as exc:
        if sock is not None:
            sock.close()
        problem, status = _PROBLEMS.get(exc.errno or 0, (exc.strerror or str(exc), 1))
        raise ListenError(bind, problem, status) from None
    sock.setblocking(False)
    return sock


def socket_from_fd(fd: int) -> socket.socket:
    """A listening socket inherited from a parent (systemd socket activation, a supervisor)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    """A bind string that reaches ``sock`` (the real port when bound to port 0)."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


def unix_socket_file(sock: socket.socket) -> tuple[str, tuple[int, int] | None]:
    """The path of a bound unix socket and the identity of its file, for ``unlink_unix_socket``."""
    path = sock.getsockname()
    try:
        st = os.stat(path)
    except OSError:
        return path, None
    return path, (st.st_dev, st.st_ino)


def unlink_unix_socket(path: str, identity: tuple[int, int] | None) -> None:
    """Remove the socket file we bound, unless another server has bound the path since.

    A new instance started before the old one has exited (a rolling restart on one
    path) replaces the file; the old one's exit must not remove the new one's.
    """
    try:
        st = os.stat(path)
    except OSError:
        return
    if identity is not None and (st.st_dev, st.st_ino) != identity:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
