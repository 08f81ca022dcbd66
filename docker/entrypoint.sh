#!/bin/sh
# Container entrypoint: bring the database to the latest migration, then serve.
# Extra arguments go to `gateway serve` (e.g. --no-worker on API-only replicas).
# Environment: the GATEWAY_* settings (see the README), HOST (default 0.0.0.0), PORT
# (default 8000).
set -eu
gateway migrate
exec gateway serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" "$@"
