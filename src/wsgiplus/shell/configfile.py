"""Settings from TOML: ``--config wsgiplus.toml`` or ``[tool.wsgiplus]`` in ``pyproject.toml``.

Keys are the ``Config`` field names (``max_requests`` or ``max-requests``), so
the file mirrors the command line. Values are checked and converted here, so a
typo fails at startup with the file and key named, not at the first request.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from .config import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None  # type: ignore[assignment]

__all__ = ["ConfigFileError", "coerce", "find_pyproject", "load_file", "parse_size"]

# names accepted besides the Config fields: CLI spellings
ALIASES = {"fd": "fds", "uds": "uds", "reload_dir": "reload_dirs", "w": "workers", "t": "threads"}


class ConfigFileError(ValueError):
    """A config file that cannot be used, with the reason and where."""


def parse_size(value: str | int) -> int:
    """``1048576``, ``"512k"``, ``"10m"``, ``"1g"`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"want a size, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text.endswith("b"):
        text = text[:-1]
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _kinds() -> dict[str, tuple[str, bool]]:
    """field name -> (base kind, optional) from the dataclass annotations."""
    kinds = {}
    for f in dataclasses.fields(Config):
        annotation = str(f.type).replace(" ", "")
        optional = "None" in annotation.split("|")
        base = annotation.split("|")[0]
        kinds[f.name] = (base, optional)
    return kinds


KINDS = _kinds()
_OFF = ("", "none", "off", "null")


def coerce(name: str, value: Any) -> Any:
    """Convert a value for field ``name`` from TOML (or CLI text); ValueError says what is wanted."""
    base, optional = KINDS[name]
    if optional and (value is None or value is False or (isinstance(value, str) and value.lower() in _OFF)):
        return None
    if name.endswith("_size") or name in ("write_buffer_high", "write_buffer_low"):
        try:
            return parse_size(value)
        except (TypeError, ValueError):
            raise ValueError(f"want a size like 1048576 or '10m', got {value!r}") from None
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ValueError(f"want true or false, got {value!r}")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"want an integer, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"want an integer, got {value!r}") from None
        if optional and number <= 0:
            return None  # 0 turns an optional limit off
        return number
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"want a number of seconds, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"want a number of seconds, got {value!r}") from None
        if optional and number <= 0:
            return None
        return number
    if base.startswith("list["):
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, int) and not isinstance(items, bool):
            items = [items]
        if not isinstance(items, list):
            raise ValueError(f"want a list, got {value!r}")
        if base == "list[int]":
            try:
                return [int(v) for v in items]
            except (TypeError, ValueError):
                raise ValueError(f"want a list of integers, got {value!r}") from None
        return [str(v).strip() for v in items if str(v).strip()]
    if base == "str":
        if not isinstance(value, str):
            raise ValueError(f"want a string, got {value!r}")
        return value
    return value  # app: a string from a file


def normalize(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Key spellings to field names, values checked and converted; ``uds`` folds into ``bind``."""
    out: dict[str, Any] = {}
    uds: list[str] = []
    for key, value in values.items():
        name = key.replace("-", "_")
        name = ALIASES.get(name, name)
        if name == "uds":
            uds += [value] if isinstance(value, str) else list(value)
            continue
        if name not in KINDS:
            known = ", ".join(sorted(KINDS))
            raise ConfigFileError(f"{source}: unknown setting {key!r} (known: {known})")
        try:
            out[name] = coerce(name, value)
        except ValueError as exc:
            raise ConfigFileError(f"{source}: setting {key!r}: {exc}") from None
    if uds:
        out["bind"] = list(out.get("bind", [])) + [f"unix:{p}" for p in uds]
    return out


def _read(path: Path) -> dict[str, Any]:
    if tomllib is None:
        raise ConfigFileError(f"{path}: reading TOML on Python 3.10 needs 'tomli' (pip install tomli)")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML file: its ``[tool.wsgiplus]`` or ``[wsgiplus]`` table, else the top level."""
    p = Path(path)
    data = _read(p)
    table = data.get("tool", {}).get("wsgiplus") if isinstance(data.get("tool"), dict) else None
    source = f"{p} [tool.wsgiplus]"
    if table is None and isinstance(data.get("wsgiplus"), dict):
        table, source = data["wsgiplus"], f"{p} [wsgiplus]"
    if table is None:
        if p.name == "pyproject.toml":
            return {}
        table, source = data, str(p)
    return normalize(table, source)


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path | None:
    """``pyproject.toml`` in ``start`` (default: the working directory), if there is one."""
    path = Path(start or os.getcwd()) / "pyproject.toml"
    return path if path.is_file() else None
