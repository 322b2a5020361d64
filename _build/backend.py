"""The build backend: setuptools', plus mypy when the accelerated build is asked for.

``WSGIPLUS_COMPILE=1 pip install .`` compiles the hot modules (see setup.py) to C
extensions with mypyc; without it the wheel is pure Python, as always. mypy (which
ships mypyc) is then a build requirement, fetched into the isolated build
environment like setuptools is.
"""

from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - the rest of the hooks, unchanged

_COMPILER = ["mypy>=1.10"]


def _compiling() -> bool:
    return os.environ.get("WSGIPLUS_COMPILE", "").strip().lower() not in ("", "0", "no", "false")


# When compiling, setuptools' own hooks are not asked: they run setup.py, which imports mypyc,
# which is what they are asked to find out about (setup.py declares no setup_requires).


def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
    if _compiling():
        return list(_COMPILER)
    return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):  # type: ignore[no-untyped-def]
    if _compiling():
        return list(_COMPILER)
    return _setuptools.get_requires_for_build_editable(config_settings)
