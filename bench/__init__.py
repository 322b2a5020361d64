"""The benchmark suite: WSGI+ against peer servers, same run, same machine (see docs/benchmarks.md)."""
