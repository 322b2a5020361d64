"""Packaging is in pyproject.toml. This file only adds the optional accelerated build.

``WSGIPLUS_COMPILE=1 pip install .`` compiles the modules on the request path with mypyc
(their type hints are the source of truth: the same .py files, nothing generated to keep
in step). Without it, which is the default, the package is pure Python.
"""

from __future__ import annotations

import os

from setuptools import setup

# The loop thread's per-request path: parse, exchange, environ, runner, stream, access log.
COMPILED = [
    "src/wsgiplus/protocols/http11.py",
    "src/wsgiplus/server/core.py",
    "src/wsgiplus/server/streams.py",
    "src/wsgiplus/server/connection.py",
    "src/wsgiplus/server/proxy.py",
    "src/wsgiplus/runner/core.py",
    "src/wsgiplus/runner/wsgi.py",
    "src/wsgiplus/runner/pool.py",
    "src/wsgiplus/shell/accesslog.py",
]


def _compiling() -> bool:
    return os.environ.get("WSGIPLUS_COMPILE", "").strip().lower() not in ("", "0", "no", "false")


ext_modules = []
if _compiling():
    from mypyc.build import mypycify

    ext_modules = mypycify(
        ["--ignore-missing-imports", "--follow-imports=silent", *COMPILED],
        opt_level=os.environ.get("WSGIPLUS_COMPILE_OPT", "3"),
    )

setup(ext_modules=ext_modules)
