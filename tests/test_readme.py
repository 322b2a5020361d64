"""The README's promises: the default command serves the demo; CI runs the README's test command."""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import cli_server, get_many

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    serve_cmd = next(b for b in blocks if b.strip().endswith("wsgiplus")).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci
    assert serve_cmd.startswith("python3 -m venv")


def test_default_command_serves_the_demo(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with cli_server(["--threads", "1", "--no-access-log"], tmp_path, env=env) as server:
        status, body = get_many(server.port, ["/"])[0]
        assert status == 200 and body.startswith(b"Hello from WSGI+!")
        # 30 concurrent waits on one thread, each suspended on a bridge timer
        results = get_many(server.port, ["/wait?seconds=0.5"] * 30, timeout=30)
        assert results == [(200, b"waited 0.5s without holding a thread\n")] * 30
        status, body = get_many(server.port, ["/stream"])[0]
        assert body == b"".join(b"chunk %d\n" % i for i in range(5))
