#!/usr/bin/env bash
# `make run`: the web server and a Celery worker (with beat) together, on the embedded default
# (SQLite database and SQLite broker: no server to install). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-5000}"
.venv/bin/celery -A portal.worker worker --beat --concurrency 1 --loglevel INFO \
  --without-gossip --without-mingle &
worker=$!
trap 'kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null' EXIT INT TERM
.venv/bin/flask --app app run --host "$HOST" --port "$PORT"
