"""Proxy headers: believed from allowed peers only; the rightmost untrusted hop is the client."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from wsgiplus.server.proxy import TrustedPeers, fix_environ, make_proxy_fixer, parse_forwarded
from wsgiplus.shell.config import Config


def env(peer: str = "10.0.0.1", **headers: str) -> dict[str, Any]:
    environ = {
        "REMOTE_ADDR": peer,
        "REMOTE_PORT": "5555",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "internal:8000",
    }
    environ.update(headers)
    return environ


def fixed(trusted: str, family: str = "x-forwarded", **kw: Any) -> dict[str, Any]:
    environ = env(**kw)
    fix_environ(environ, TrustedPeers(trusted), family)
    return environ


def test_x_forwarded_headers_from_a_trusted_peer_rewrite_the_environ() -> None:
    e = fixed("10.0.0.0/8", HTTP_X_FORWARDED_FOR="203.0.113.7", HTTP_X_FORWARDED_PROTO="https",
              HTTP_X_FORWARDED_HOST="example.com")
    assert e["REMOTE_ADDR"] == "203.0.113.7"
    assert e["wsgi.url_scheme"] == "https"
    assert (e["HTTP_HOST"], e["SERVER_NAME"], e["SERVER_PORT"]) == ("example.com", "example.com", "443")
    assert e["wsgiplus.proxy_peer"] == "10.0.0.1"


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    e = fixed("192.168.0.0/16", HTTP_X_FORWARDED_FOR="203.0.113.7", HTTP_X_FORWARDED_PROTO="https",
              HTTP_FORWARDED="for=198.51.100.1;proto=https")
    assert e["REMOTE_ADDR"] == "10.0.0.1"
    assert e["wsgi.url_scheme"] == "http"
    assert e["HTTP_HOST"] == "internal:8000"


def test_chain_the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() -> None:
    # a client forging "1.1.1.1" before the real hops cannot become 1.1.1.1
    e = fixed("10.0.0.0/8", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7, 10.0.0.5")
    assert e["REMOTE_ADDR"] == "203.0.113.7"
    # everyone trusted: the leftmost
    assert fixed("*", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7, 10.0.0.5")["REMOTE_ADDR"] == "1.1.1.1"


def test_x_forwarded_port_and_ipv6_client() -> None:
    e = fixed("10.0.0.1", HTTP_X_FORWARDED_FOR="2001:db8::1", HTTP_X_FORWARDED_HOST="example.com",
              HTTP_X_FORWARDED_PORT="8443", HTTP_X_FORWARDED_PROTO="https")
    assert e["REMOTE_ADDR"] == "2001:db8::1"
    assert (e["HTTP_HOST"], e["SERVER_PORT"]) == ("example.com:8443", "8443")


def test_rfc7239_forwarded() -> None:
    header = 'for=192.0.2.60;proto=https;host="shop.example:8443", for="[2001:db8:cafe::17]:4711"'
    assert parse_forwarded(header) == [
        {"for": "192.0.2.60", "proto": "https", "host": "shop.example:8443"},
        {"for": "[2001:db8:cafe::17]:4711"},
    ]
    # the last hop 2001:db8:cafe::17 is not trusted: it is the client, with its element's values
    e = fixed("10.0.0.0/8", "forwarded", HTTP_FORWARDED=header)
    assert (e["REMOTE_ADDR"], e["REMOTE_PORT"]) == ("2001:db8:cafe::17", "4711")
    assert e["wsgi.url_scheme"] == "http"
    # when that hop is a trusted proxy, the element before it names the client
    e = fixed("10.0.0.0/8, 2001:db8:cafe::/48", "forwarded", HTTP_FORWARDED=header)
    assert e["REMOTE_ADDR"] == "192.0.2.60"
    assert e["wsgi.url_scheme"] == "https"
    assert (e["HTTP_HOST"], e["SERVER_NAME"], e["SERVER_PORT"]) == ("shop.example:8443", "shop.example", "8443")
    # one family only: the configured one; the other is ignored (a proxy passes it through)
    both = {"HTTP_FORWARDED": "for=192.0.2.1;proto=https", "HTTP_X_FORWARDED_FOR": "192.0.2.99"}
    assert fixed("10.0.0.0/8", "forwarded", **both)["REMOTE_ADDR"] == "192.0.2.1"
    e = fixed("10.0.0.0/8", **both)
    assert (e["REMOTE_ADDR"], e["wsgi.url_scheme"]) == ("192.0.2.99", "http")


def test_garbage_values_are_not_believed() -> None:
    e = fixed("*", HTTP_X_FORWARDED_FOR="not-an-ip", HTTP_X_FORWARDED_PROTO="gopher",
              HTTP_X_FORWARDED_HOST="evil.com/path?x", HTTP_X_FORWARDED_PORT="99999")
    assert e["REMOTE_ADDR"] == "10.0.0.1"
    assert e["wsgi.url_scheme"] == "http"
    assert e["HTTP_HOST"] == "internal:8000"
    assert e["SERVER_PORT"] == "8000"
    e = fixed("*", "forwarded", HTTP_FORWARDED='for=unknown;proto=https, for="_hidden"')
    assert e["REMOTE_ADDR"] == "10.0.0.1"


def test_fix_runs_once_and_unix_peers_are_trusted() -> None:
    trusted = TrustedPeers(["127.0.0.1"])
    e = env(peer="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    fix_environ(e, trusted)
    e["HTTP_X_FORWARDED_FOR"] = "127.0.0.1, 198.51.100.1"
    fix_environ(e, trusted)  # a second call must not re-walk with the new REMOTE_ADDR
    assert e["REMOTE_ADDR"] == "203.0.113.7"
    assert "" in trusted  # a unix socket peer
    assert "::ffff:127.0.0.1" in trusted  # IPv4-mapped


def test_trusted_peers_config_errors_and_off_switch() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        TrustedPeers("10.0.0.1, localhost")
    assert make_proxy_fixer(Config(proxy_headers=False)) is None
    assert make_proxy_fixer(Config(proxy_headers=True, forwarded_allow_ips=["*"])) is not None


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps({k: environ.get(k) for k in
                       ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def ask(port: int, headers: dict[str, str]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


HEADERS = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com"}


def test_real_server_trusts_an_allowed_peer(serve) -> None:
    server = serve(echo_app, proxy_headers=True, forwarded_allow_ips=["127.0.0.0/8"])
    got = ask(server.port, HEADERS)
    assert got == {"REMOTE_ADDR": "203.0.113.7", "wsgi.url_scheme": "https", "HTTP_HOST": "example.com",
                   "SERVER_NAME": "example.com", "SERVER_PORT": "443"}


def test_real_server_ignores_headers_from_a_peer_not_allowed(serve) -> None:
    server = serve(echo_app, proxy_headers=True, forwarded_allow_ips=["10.0.0.0/8"])
    got = ask(server.port, HEADERS)
    assert got["REMOTE_ADDR"] == "127.0.0.1"
    assert got["wsgi.url_scheme"] == "http"
    assert got["HTTP_HOST"] == f"127.0.0.1:{server.port}"


def test_real_server_without_proxy_headers_ignores_them(serve) -> None:
    server = serve(echo_app, proxy_headers=False, forwarded_allow_ips=["*"])
    got = ask(server.port, HEADERS)
    assert got["REMOTE_ADDR"] == "127.0.0.1"
    assert got["wsgi.url_scheme"] == "http"
