"""Real Flask and Django apps, unchanged, served by WSGI+ (Django through the real CLI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apps.plain_flask import app as flask_app
from conftest import cli_server

ROOT = Path(__file__).resolve().parent.parent


def test_flask_app(serve) -> None:
    server = serve(flask_app, threads=4)
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/").text == "hello from flask"
        r = client.post("/form", data={"name": "ann"}, files={"f": ("a.txt", b"x" * 100_000)})
        assert r.json() == {"name": "ann", "files": ["f"], "size": 100_000}
        assert client.post("/json", json={"a": [1, 2]}).json() == {"a": [1, 2]}
        r = client.get("/stream")
        assert r.text == "line 0\nline 1\nline 2\n" and r.headers["transfer-encoding"] == "chunked"
        assert client.get("/missing").status_code == 404
        assert client.get("/boom").status_code == 500


@pytest.fixture
def django_server(tmp_path: Path) -> Iterator[str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}",
               PLAIN_DJANGO_DB=str(tmp_path / "db.sqlite3"))
    args = ["apps.plain_django:application", "--threads", "4", "--root-path", "/site"]
    with cli_server(args, tmp_path, env=env) as server:
        yield server.url


def test_django_app_through_the_cli(django_server: str) -> None:
    with httpx.Client(base_url=django_server) as client:
        assert client.get("/site/").text == "hello from django"
        r = client.post("/site/echo/?q=1", content=b"payload")
        assert r.json() == {"method": "POST", "body": "payload", "q": "1", "path": "/site/echo/",
                            "script_name": "/site"}
        assert client.get("/site/stream/").text == "part0;part1;part2;part3;part4;"
        assert client.get("/site/boom/").status_code == 500
        assert client.get("/site/nope/").status_code == 404
