"""Proxy headers: who the client really is, when a trusted proxy says so.

Behind a load balancer the TCP peer is the proxy, not the client. The proxy
reports the client in ``X-Forwarded-For``/``-Proto``/``-Host``/``-Port`` or in
RFC 7239 ``Forwarded`` (one family is believed, by configuration). Those headers are believed only when the TCP peer is
in ``forwarded_allow_ips``: anyone else could forge them. In a chain of
proxies the client is the rightmost address that is *not* a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TrustedPeers", "fix_environ", "make_proxy_fixer", "parse_forwarded"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# environ key holding the TCP peer before the rewrite; also marks it as done
PEER_KEY = "wsgiplus.proxy_peer"

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(?::[0-9]{1,5})?$")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class TrustedPeers:
    """A set of addresses and networks; ``'*'`` trusts everyone.

    Peers on a unix socket (empty address) are trusted: only local processes
    allowed by the socket's file permissions can reach it.
    """

    def __init__(self, allowed: Iterable[str] | str) -> None:
        if isinstance(allowed, str):
            allowed = allowed.split(",")
        self.everyone = False
        # peer string -> trusted? (parsing an address costs ~10 us; the same peers come back)
        self._seen: dict[str, bool] = {}
        self.networks: list[IPNetwork] = []
        for item in allowed:
            item = item.strip()
            if not item:
                continue
            if item == "*":
                self.everyone = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {item!r} is not an IP address, a CIDR network or '*'"
                ) from None

    def __contains__(self, host: object) -> bool:
        if self.everyone or host == "":
            return True
        if not isinstance(host, str):
            return False
        seen = self._seen
        hit = seen.get(host)
        if hit is not None:
            return hit
        addr = _ip(host)
        trusted = addr is not None and any(addr in net for net in self.networks)
        if len(seen) >= 4096:  # bounded: clients behind no proxy are many
            seen.clear()
        seen[host] = trusted
        return trusted

    def __repr__(self) -> str:
        return f"TrustedPeers({'*' if self.everyone else [str(n) for n in self.networks]})"


def _ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _split_node(node: str) -> tuple[str | None, str | None]:
    """``'1.2.3.4:80'``, ``'[::1]:80'``, ``'::1'`` -> (address, port); (None, None) if not an IP."""
    node = node.strip().strip('"')
    port = None
    if node.startswith("["):
        end = node.find("]")
        if end < 0:
            return None, None
        host, rest = node[1:end], node[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = rest[1:]
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
        if not port.isdigit():
            port = None
    else:
        host = node
    addr = _ip(host)
    if addr is None:
        return None, None
    return str(addr), port


def _values(environ: dict[str, Any], key: str) -> list[str]:
    raw = environ.get(key)
    if not raw:
        return []
    return [v.strip() for v in raw.split(",") if v.strip()]


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded``: one dict per element, lower-case keys, quotes removed."""
    elements: list[dict[str, str]] = []
    for element in _split_outside_quotes(value, ","):
        pairs: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            key, sep, val = pair.partition("=")
            if not sep:
                continue
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            pairs[key.strip().lower()] = val
        elements.append(pairs)
    return elements


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf).strip())
    return [p for p in parts if p]


def _client_index(nodes: list[str | None], trusted: TrustedPeers) -> int:
    """Walk the hops from our side: the first one that is not a trusted proxy is the client."""
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if node is None or node not in trusted:
            return i
    return 0


def _pick(values: list[str], index: int, hops: int) -> str | None:
    """The value for hop ``index`` when the proxies kept one per hop, else the nearest proxy's."""
    if not values:
        return None
    if len(values) == hops:
        return values[index]
    return values[-1]


def _set_host(environ: dict[str, Any], host: str, scheme: str) -> None:
    if not _HOST.match(host):
        return
    environ["HTTP_HOST"] = host
    if host.startswith("["):
        name, _, port = host[1:].partition("]")
        port = port[1:]
    else:
        name, _, port = host.partition(":")
    environ["SERVER_NAME"] = name
    environ["SERVER_PORT"] = port or ("443" if scheme == "https" else "80")


def fix_environ(environ: dict[str, Any], trusted: TrustedPeers, family: str = "x-forwarded") -> None:
    """Rewrite REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST/SERVER_NAME/SERVER_PORT from proxy headers.

    Does nothing unless the TCP peer is trusted; runs at most once per environ.
    Only one header family is believed, ``family``: ``"x-forwarded"``
    (X-Forwarded-For/-Proto/-Host/-Port, what nginx sets) or ``"forwarded"``
    (RFC 7239). The other family is ignored: a proxy that sets one passes the
    client's own copy of the other through, so believing both lets a client
    spoof its address and scheme.
    """
    if PEER_KEY in environ:
        return
    peer = environ.get("REMOTE_ADDR", "")
    environ[PEER_KEY] = peer
    if peer not in trusted:
        return
    if family == "forwarded":
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded:
            _apply_forwarded(environ, forwarded, trusted)
    else:
        _apply_x_forwarded(environ, trusted)


def _apply_forwarded(environ: dict[str, Any], header: str, trusted: TrustedPeers) -> None:
    elements = parse_forwarded(header)
    if not elements:
        return
    nodes = [_split_node(el["for"]) if "for" in el else (None, None) for el in elements]
    index = _client_index([addr for addr, _ in nodes], trusted)
    element = elements[index]
    addr, port = nodes[index]
    if addr is not None:
        environ["REMOTE_ADDR"] = addr
        environ["REMOTE_PORT"] = port or "0"
    scheme = _SCHEMES.get(element.get("proto", "").lower())
    if scheme:
        environ["wsgi.url_scheme"] = scheme
    host = element.get("host")
    if host:
        _set_host(environ, host, environ.get("wsgi.url_scheme", "http"))


_X_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                "HTTP_X_FORWARDED_PORT")


def _apply_x_forwarded(environ: dict[str, Any], trusted: TrustedPeers) -> None:
    for key in _X_FORWARDED:
        if key in environ:
            break
    else:  # a request that came through no proxy (or a direct client of a trusted host)
        return
    hops = _values(environ, "HTTP_X_FORWARDED_FOR")
    nodes = [_split_node(h) for h in hops]
    index = _client_index([addr for addr, _ in nodes], trusted) if hops else 0
    if hops:
        addr, port = nodes[index]
        if addr is not None:
            environ["REMOTE_ADDR"] = addr
            environ["REMOTE_PORT"] = port or "0"
    scheme = _SCHEMES.get((_pick(_values(environ, "HTTP_X_FORWARDED_PROTO"), index, len(hops)) or "").lower())
    if scheme:
        environ["wsgi.url_scheme"] = scheme
    host = _pick(_values(environ, "HTTP_X_FORWARDED_HOST"), index, len(hops))
    if host:
        _set_host(environ, host, environ.get("wsgi.url_scheme", "http"))
    port = _pick(_values(environ, "HTTP_X_FORWARDED_PORT"), index, len(hops))
    if port and port.isdigit() and int(port) < 65536:
        environ["SERVER_PORT"] = port
        current = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if current and not re.search(r":[0-9]+$", current):
            default = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
            environ["HTTP_HOST"] = current if port == default else f"{current}:{port}"


def make_proxy_fixer(config: Any) -> Callable[[dict[str, Any]], None] | None:
    """The environ rewrite for ``config`` (``proxy_headers``, ``forwarded_allow_ips``,
    ``forwarded_headers``), or None if off."""
    if not getattr(config, "proxy_headers", False):
        return None
    trusted = TrustedPeers(config.forwarded_allow_ips)
    family = getattr(config, "forwarded_headers", "x-forwarded")

    def fix(environ: dict[str, Any]) -> None:
        fix_environ(environ, trusted, family)

    return fix

