"""Finds the WSGI app a user names: ``module:attr``, ``module:create_app()``, ``pkg.mod:obj.attr``."""

from __future__ import annotations

import ast
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["AppImportError", "import_app"]


class AppImportError(Exception):
    """The app spec does not name something importable and callable."""


def import_app(spec: str, factory: bool = False) -> Callable[..., Any]:
    """Import ``module:expr``; ``expr`` is a name path or a call like ``create_app('prod')``.

    With ``factory`` the named object is called with no arguments (uvicorn's ``--factory``).
    """
    module_name, sep, expr = spec.partition(":")
    if not module_name:
        raise AppImportError(f"bad app {spec!r}: want module:attribute")
    expr = expr or "application"
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppImportError(f"cannot import module {module_name!r} (from {spec!r})") from exc
        raise
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppImportError(f"bad app attribute {expr!r} in {spec!r}") from None
    app = _evaluate(tree, module, spec)
    if factory:
        app = app()
    if not callable(app):
        raise AppImportError(f"{spec!r} is {type(app).__name__}, not a WSGI callable")
    return app


def _evaluate(node: ast.AST, module: Any, spec: str) -> Any:
    """Evaluate a name, attribute path or call with literal arguments; nothing else."""
    if isinstance(node, ast.Name):
        try:
            return getattr(module, node.id)
        except AttributeError:
            raise AppImportError(f"module {module.__name__!r} has no attribute {node.id!r}") from None
    if isinstance(node, ast.Attribute):
        base = _evaluate(node.value, module, spec)
        try:
            return getattr(base, node.attr)
        except AttributeError:
            raise AppImportError(f"{spec!r}: no attribute {node.attr!r}") from None
    if isinstance(node, ast.Call):
        func = _evaluate(node.func, module, spec)
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except ValueError:
            raise AppImportError(f"{spec!r}: factory arguments must be literals") from None
        return func(*args, **kwargs)
    raise AppImportError(f"{spec!r}: want a name, attribute or call, not {ast.dump(node)}")
