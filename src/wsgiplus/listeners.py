"""Listening sockets from bind strings: ``HOST:PORT``, ``[::1]:PORT``, ``unix:/path``, ``fd://N``.

Sockets are made here, not by asyncio, so a supervisor can open them once and
hand the same sockets to every worker process it forks.
"""

from __future__ import annotations

import os
import socket
import stat

__all__ = ["bind_socket", "parse_bind", "socket_from_fd", "describe", "unix_socket_file", "unlink_unix_socket"]


def parse_bind(bind: str) -> tuple[str, str | int, int | None]:
    """Return ``("tcp", host, port)``, ``("unix", path, None)`` or ``("fd", fd, None)``."""
    if bind.startswith("unix:"):
        return "unix", bind[5:], None
    if bind.startswith("fd://"):
        return "fd", int(bind[5:]), None
    if bind.startswith("["):
        host, sep, port = bind[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad bind {bind!r}: want [IPV6]:PORT")
        return "tcp", host, int(port)
    host, sep, port = bind.rpartition(":")
    if not sep:
        return "tcp", "127.0.0.1", int(bind) if bind.isdigit() else _bad(bind)
    return "tcp", host or "0.0.0.0", int(port)


def _bad(bind: str) -> int:
    raise ValueError(f"bad bind {bind!r}: want HOST:PORT, [IPV6]:PORT, unix:/path or fd://N")


def bind_socket(bind: str, backlog: int = 2048) -> socket.socket:
    kind, where, port = parse_bind(bind)
    if kind == "fd":
        return socket_from_fd(int(where))
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
        family = socket.AF_INET6 if ":" in str(where) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(where), port))
    sock.listen(backlog)
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
