"""Drives one app iterable on the pool: the runner, the pool, futures, the environ."""
