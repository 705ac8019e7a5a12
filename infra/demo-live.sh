#!/usr/bin/env bash
# `make demo LIVE=1`: the demo with real sources beside the simulator. Starts `opslake serve`
# (push endpoints, syslog receiver) and Prometheus, node_exporter, Alertmanager, rsyslog on
# loopback, wired to it (remote write, Alertmanager webhook, syslog forwarding), enables the
# node_exporter collection task, then serves the Dagster UI (on OPSLAKE_DAGSTER_UPSTREAM's port,
# behind the door `opslake serve` opens when OPSLAKE_DAGSTER_DOOR_PORT is set) until Ctrl-C;
# everything it started is stopped by PID on the way out. Prometheus and Alertmanager push with an API key
# of the push-only role `ingest` (user opslake-ingest), created on the first run and kept in
# OPSLAKE_INGEST_KEY_FILE [<services dir>/ingest.key, mode 0600], never in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OPSLAKE="$VENV/bin/opslake"
export OPSLAKE_HOME=${OPSLAKE_HOME:-$PWD/var}
export OPSLAKE_SERVICES_DIR=${OPSLAKE_SERVICES_DIR:-$OPSLAKE_HOME/services}
API_PORT=${OPSLAKE_API_PORT:-8700}
SYSLOG_IN=${OPSLAKE_SYSLOG_RECEIVER_PORT:-6514}
export OPSLAKE_REMOTE_WRITE_URL="http://127.0.0.1:$API_PORT/v1/ingest/prometheus/remote_write"
export OPSLAKE_ALERT_WEBHOOK_URL="http://127.0.0.1:$API_PORT/v1/ingest/alertmanager"
export OPSLAKE_SYSLOG_FORWARD="127.0.0.1:$SYSLOG_IN"
export OPSLAKE_INGEST_KEY_FILE=${OPSLAKE_INGEST_KEY_FILE:-$OPSLAKE_SERVICES_DIR/ingest.key}
INGEST_USER=opslake-ingest
mkdir -p "$OPSLAKE_SERVICES_DIR"

# The key file is kept across runs; one the identity store does not list as live (a fresh
# OPSLAKE_HOME, a revoked key) is replaced.
ensure_ingest_key() {
  local file=$OPSLAKE_INGEST_KEY_FILE key_id listed
  if [ -s "$file" ]; then
    key_id=$(cut -d_ -f2 "$file")
    listed=$("$OPSLAKE" security keys --user "$INGEST_USER")
    if grep -F "\"key_id\": \"$key_id\"" <<<"$listed" | grep -q '"revoked_at": null'; then
      return 0
    fi
  fi
  # Once an administrator has a TOTP authenticator, these commands need one to vouch:
  # export OPSLAKE_ADMIN=<name> and OPSLAKE_ADMIN_TOTP=<current code> first.
  if ! grep -qF "\"name\": \"$INGEST_USER\"" <<<"$("$OPSLAKE" security users)"; then
    "$OPSLAKE" security add-user "$INGEST_USER" --role ingest --random-password
  fi
  # Prometheus pushes every few seconds per shard: far more than the default daily quota.
  (umask 077 && "$OPSLAKE" security create-key "$INGEST_USER" --scope ingest:write \
     --quota 10000000 | tail -n 1 | tr -d '\n' >"$file.tmp")
  mv -f "$file.tmp" "$file"
  echo "ingest key for $INGEST_USER written to $file"
}
ensure_ingest_key

bash infra/install-services.sh
setsid "$OPSLAKE" serve --port "$API_PORT" --syslog-port "$SYSLOG_IN" \
  >>"$OPSLAKE_SERVICES_DIR/opslake-serve.log" 2>&1 </dev/null &
SERVE_PID=$!
UI_PID=
cleanup() {
  if [ -n "$UI_PID" ]; then kill -TERM "$UI_PID" 2>/dev/null || true; wait "$UI_PID" || true; fi
  bash infra/services.sh stop node_exporter prometheus alertmanager rsyslog || true
  kill -TERM "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
}
trap cleanup EXIT
# Handle Ctrl-C / SIGTERM at once (bash defers traps while a foreground child runs).
trap 'exit 130' INT TERM
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
bash infra/services.sh start node_exporter prometheus alertmanager rsyslog
"$OPSLAKE" tasks enable node-exporter-local
echo "live sources: Prometheus http://127.0.0.1:${OPSLAKE_PROMETHEUS_PORT:-9090}," \
     "data service http://127.0.0.1:$API_PORT/docs;" \
     "run '$OPSLAKE materialize --from $(date -u +%F)' to bring today's live data in"
UPSTREAM=${OPSLAKE_DAGSTER_UPSTREAM:-http://127.0.0.1:3001}
"$OPSLAKE" ui --port "${UPSTREAM##*:}" &
UI_PID=$!
wait "$UI_PID"
