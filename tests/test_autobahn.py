"""Autobahn|Testsuite cases (run by ``kosoku``) against the thread-free echo app.

Every case must end OK, NON-STRICT or INFORMATIONAL; none FAILED, WRONG CODE or
UNCLEAN. The default run covers 1-7, 10 and the first deflate groups (12.1,
13.1); the long ones (9 performance, all of 12 and 13) are marked ``slow``:
``python -m pytest -m slow tests/test_autobahn.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.ws_echo import app  # noqa: E402

GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def kosoku() -> str:
    exe = shutil.which("kosoku") or str(Path(sys.executable).parent / "kosoku")
    if not Path(exe).exists():
        pytest.skip("kosoku is not installed (pip install kosoku)")
    return exe


def run_cases(serve, tmp_path: Path, include: list[str], timeout: float) -> dict[str, dict]:
    server = serve(app, threads=2, ws_ping_interval=None)
    args = [kosoku(), f"127.0.0.1:{server.port}", "-p", "4", "-o", str(tmp_path)]
    for case in include:
        args += ["-i", case]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    reports = list(tmp_path.glob("**/index.json"))
    assert reports, f"no report: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    index = json.loads(reports[0].read_text())
    cases = {case: result for agent in index.values() for case, result in agent.items()}
    bad = {case: (r["behavior"], r["behaviorClose"]) for case, r in cases.items()
           if r["behavior"] not in GOOD or r["behaviorClose"] not in GOOD_CLOSE}
    assert not bad, bad
    return cases


@pytest.mark.timeout(600)
def test_autobahn_core_and_first_deflate_groups(serve, tmp_path: Path) -> None:
    groups = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.1.*", "13.1.*"]
    cases = run_cases(serve, tmp_path, groups, timeout=540)
    for prefix in ("1.", "2.", "3.", "4.", "5.", "6.", "7.", "10.", "12.1.", "13.1."):
        assert any(c.startswith(prefix) for c in cases), prefix
    assert len(cases) >= 280


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_autobahn_performance_and_all_deflate(serve, tmp_path: Path) -> None:
    cases = run_cases(serve, tmp_path, ["9.*", "12.*", "13.*"], timeout=3500)
    assert any(c.startswith("9.") for c in cases) and any(c.startswith("13.7") for c in cases)
