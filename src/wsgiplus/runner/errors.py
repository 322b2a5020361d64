"""The runner's exceptions, in a module of their own: the optional compiled build
(mypyc, see setup.py) cannot compile a subclass of ``RuntimeError``."""

from __future__ import annotations

__all__ = ["IllegalTransition"]


class IllegalTransition(RuntimeError):
    """A runner was asked to go from one state to a state ``_TRANSITIONS`` does not allow."""
