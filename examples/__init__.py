"""Runnable WSGI+ examples; each module's docstring gives its one command (run from the repo root)."""
