#!/usr/bin/env bash
# The benchmark in one command: bash bench/run.sh [--quick] [--scenarios hello,upstream,idle,stream,sse,slow]
# Installs wrk/nginx and the peers' virtualenv when missing (bench/setup.sh), then runs bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
# the idle scenario holds 10,000 connections open in one client process
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "${BENCH_VENV:-.bench-venv}/bin/python" -m bench.run "$@"
