#!/usr/bin/env bash
# `make demo`'s last step: the Dagster UI on loopback behind its door, Superset behind its
# own. Starts `opslake serve` (the sign-in page and both doors, ports from
# OPSLAKE_DAGSTER_DOOR_PORT / OPSLAKE_SUPERSET_DOOR_PORT), then the Dagster webserver and daemon
# on the door's upstream port (OPSLAKE_DAGSTER_UPSTREAM) until Ctrl-C; both are stopped by PID
# on the way out. `infra/demo-live.sh` (LIVE=1) does the same beside the live sources.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OPSLAKE="$VENV/bin/opslake"
export OPSLAKE_HOME=${OPSLAKE_HOME:-$PWD/var}
API_PORT=${OPSLAKE_API_PORT:-8700}
UPSTREAM=${OPSLAKE_DAGSTER_UPSTREAM:-http://127.0.0.1:3001}
mkdir -p "$OPSLAKE_HOME/logs"
setsid "$OPSLAKE" serve --port "$API_PORT" >>"$OPSLAKE_HOME/logs/opslake-serve.log" 2>&1 </dev/null &
SERVE_PID=$!
UI_PID=
cleanup() {
  if [ -n "$UI_PID" ]; then kill -TERM "$UI_PID" 2>/dev/null || true; wait "$UI_PID" || true; fi
  kill -TERM "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
}
trap cleanup EXIT
# Handle Ctrl-C / SIGTERM at once (bash defers traps while a foreground child runs).
trap 'exit 130' INT TERM
"$OPSLAKE" ui --port "${UPSTREAM##*:}" &
UI_PID=$!
wait "$UI_PID"
