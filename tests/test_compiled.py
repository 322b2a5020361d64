"""The optional compiled build (``WSGIPLUS_COMPILE=1 pip install .``, mypyc; see setup.py).

The suite runs against both builds (``.ci/run``). These tests make sure the run that is
meant to test the compiled modules really does, and that the pure-Python package needs
nothing the compiled build brings.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import wsgiplus
from wsgiplus import _compiled

ROOT = Path(__file__).resolve().parent.parent
HOT = ["protocols.http11", "server.core", "server.streams", "server.connection", "server.proxy",
       "runner.core", "runner.wsgi", "runner.pool", "shell.accesslog"]


def _is_extension(name: str) -> bool:
    module = importlib.import_module(f"wsgiplus.{name}")
    return not str(module.__file__).endswith((".py", ".pyc"))


def test_the_build_under_test_is_the_one_ci_asked_for() -> None:
    expected = os.environ.get("WSGIPLUS_EXPECT_COMPILED")
    if expected is None:
        pytest.skip("WSGIPLUS_EXPECT_COMPILED is not set: either build may be under test")
    want = expected == "1"
    assert _compiled.compiled() is want, wsgiplus.__file__
    assert [_is_extension(name) for name in HOT] == [want] * len(HOT)


def test_compiled_says_what_the_request_path_is() -> None:
    assert _compiled.compiled() is _is_extension("server.core")


def test_setup_py_compiles_the_modules_this_test_lists() -> None:
    text = (ROOT / "setup.py").read_text()
    listed = [line.strip().strip('",') for line in text.splitlines() if line.strip().startswith('"src/wsgiplus/')]
    assert listed == [f"src/wsgiplus/{name.replace('.', '/')}.py" for name in HOT]


def test_the_pure_package_imports_without_mypy_extensions() -> None:
    # mypy_extensions hidden: the decorator the compiled classes carry falls back to a no-op
    code = (
        "import sys; sys.modules['mypy_extensions'] = None\n"
        "from wsgiplus._compiled import mypyc_attr\n"
        "class C: pass\n"
        "assert mypyc_attr(allow_interpreted_subclasses=True)(C) is C\n"
        "import wsgiplus.server.core\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
