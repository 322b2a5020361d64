#!/usr/bin/env bash
# Installs what the benchmark needs: wrk, h2load and nginx (Debian), and a virtualenv
# (.bench-venv) holding WSGI+ itself and its peers, kept apart from the dev env
# so a peer's pins never leak into the project's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-.bench-venv}"

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)  # the HTTP/2 scenario's load generator
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "bench: apt-get install ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx nghttp2-client >/dev/null
    # the Debian package starts nginx on port 80; the benchmark runs its own
    # instance on 127.0.0.1 only
    (command -v service >/dev/null && service nginx stop >/dev/null 2>&1) || true
fi

PY="${BENCH_PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "bench: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.bench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ bench/setup.sh -nt "$stamp" ]; then
    echo "bench: installing peers into $VENV" >&2
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e ".[fast]" \
        gunicorn gevent waitress uvicorn a2wsgi granian hypercorn matplotlib httpx py-spy \
        "mypy>=1.10" "setuptools>=77"  # mypyc and setup.py build_ext: the wsgiplus-compiled server
    touch "$stamp"
fi
