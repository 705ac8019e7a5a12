#!/usr/bin/env bash
# Start, stop and list OpsLake's real services on loopback, each with its own config, data
# dir, log and port under one run directory; no systemd, no packaged configs or ports.
#
#   infra/services.sh start  [NAME...]   start (all by default); already running ones are kept
#   infra/services.sh stop   [NAME...]   stop by PID: TERM, then KILL after 10 s
#   infra/services.sh status [NAME...]   print what runs; exit 3 when any named one does not
#   infra/services.sh fire-alert | resolve-alert   make OpsLakeTestAlert fire / resolve
#
# NAMEs: node_exporter prometheus alertmanager mosquitto rsyslog
# Binaries come from infra/install-services.sh (Debian packages).
#
# Environment (defaults in brackets):
#   OPSLAKE_SERVICES_DIR        run dir: <name>.pid, <name>.log, configs, data [./var/services]
#   OPSLAKE_NODE_EXPORTER_PORT  [9100]     OPSLAKE_PROMETHEUS_PORT    [9090]
#   OPSLAKE_ALERTMANAGER_PORT   [9093]     OPSLAKE_MQTT_PORT          [1883]
#   OPSLAKE_SYSLOG_PORT         [5514]  (UDP and TCP, 127.0.0.1)
#   OPSLAKE_PROMETHEUS_INTERVAL_S  [5]  seconds between Prometheus' scrapes and evaluations
#   OPSLAKE_ALERT_WEBHOOK_URL   Alertmanager's webhook receiver
#                               [http://127.0.0.1:8700/v1/ingest/alertmanager]
#   OPSLAKE_REMOTE_WRITE_URL    when set, Prometheus also remote-writes there
#   OPSLAKE_SYSLOG_FORWARD      host:port; when set, rsyslog forwards RFC 5424 there
#   OPSLAKE_SYSLOG_FORWARD_PROTOCOL  tcp or udp [tcp]
#   OPSLAKE_INGEST_KEY_FILE     a file holding an OpsLake API key with the scope ingest:write
#                               (`opslake security create-key`; kept outside the repository,
#                               mode 0600); Prometheus's remote_write and Alertmanager's
#                               webhook send it as 'Authorization: Bearer'. Without it, their
#                               pushes into `opslake serve` are refused (401).
#
# Prometheus scrapes node_exporter (job "node") and itself (job "prometheus") every 5 s (or
# OPSLAKE_PROMETHEUS_INTERVAL_S) and evaluates rules/opslake.rules.yml as often:
# OpsLakeTestAlert (severity=warning, entity_id=node-local) fires while the metric
# opslake_test_alert is > 0, which node_exporter reads from
# <run dir>/textfile/opslake_test_alert.prom (written by `fire-alert`, set to 0 by
# `resolve-alert`). Alertmanager sends every alert to the webhook (send_resolved).
set -euo pipefail

ALL=(node_exporter prometheus alertmanager mosquitto rsyslog)

RUN_DIR=${OPSLAKE_SERVICES_DIR:-./var/services}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

NODE_PORT=${OPSLAKE_NODE_EXPORTER_PORT:-9100}
PROM_PORT=${OPSLAKE_PROMETHEUS_PORT:-9090}
AM_PORT=${OPSLAKE_ALERTMANAGER_PORT:-9093}
PROM_INTERVAL=${OPSLAKE_PROMETHEUS_INTERVAL_S:-5}
MQTT_PORT=${OPSLAKE_MQTT_PORT:-1883}
SYSLOG_PORT=${OPSLAKE_SYSLOG_PORT:-5514}
WEBHOOK_URL=${OPSLAKE_ALERT_WEBHOOK_URL:-http://127.0.0.1:8700/v1/ingest/alertmanager}
INGEST_KEY_FILE=${OPSLAKE_INGEST_KEY_FILE:-}
STOP_GRACE_S=10
READY_TIMEOUT_S=30

die() { echo "services: $*" >&2; exit 1; }

# The first of the given binary names that exists (Debian's name first, upstream's second).
find_binary() {
  local b
  for b in "$@"; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
    for dir in /usr/sbin /usr/bin /usr/local/bin; do
      [[ -x "$dir/$b" ]] && { echo "$dir/$b"; return 0; }
    done
  done
  die "none of $* is installed; run infra/install-services.sh"
}

port_of() {
  case $1 in
    node_exporter) echo "$NODE_PORT" ;;
    prometheus) echo "$PROM_PORT" ;;
    alertmanager) echo "$AM_PORT" ;;
    mosquitto) echo "$MQTT_PORT" ;;
    rsyslog) echo "$SYSLOG_PORT" ;;
  esac
}

# Basename a service's program must have (guards against a PID reused by another process).
binary_of() {
  case $1 in
    node_exporter) echo "^(prometheus-node-exporter|node_exporter)$" ;;
    prometheus) echo "^prometheus$" ;;
    alertmanager) echo "^(prometheus-alertmanager|alertmanager)$" ;;
    mosquitto) echo "^mosquitto$" ;;
    rsyslog) echo "^rsyslogd$" ;;
  esac
}

program_of() {
  local argv0
  argv0=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1) || true
  basename -- "${argv0:-?}"
}

# PID of a running service, or nothing (a stale pid file is removed).
running_pid() {
  local name=$1 pidfile="$RUN_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(<"$pidfile")
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" \
      && [[ "$(program_of "$pid")" =~ $(binary_of "$name") ]]; then
    echo "$pid"
  else
    rm -f "$pidfile"
  fi
}

# True while PID runs; a zombie (exited, not yet reaped by its new parent) counts as gone.
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The ingest key file as an absolute path (the configs are read from the run dir), or
# nothing when none is set; a named file that cannot be read stops the start.
ingest_key_file() {
  [[ -n "$INGEST_KEY_FILE" ]] || return 0
  [[ -r "$INGEST_KEY_FILE" && -s "$INGEST_KEY_FILE" ]] \
    || die "OPSLAKE_INGEST_KEY_FILE=$INGEST_KEY_FILE is not a readable, non-empty file; write" \
           "an API key with the scope ingest:write there (opslake security create-key)"
  local path
  path=$(cd "$(dirname -- "$INGEST_KEY_FILE")" && pwd)/$(basename -- "$INGEST_KEY_FILE")
  [[ "$path" != *[[:space:]\"]* ]] \
    || die "the ingest key file path must not contain spaces or quotes: $path"
  echo "$path"
}

# Says so when a pusher is configured without a key: its pushes would all be refused.
warn_no_key() {
  echo "services: $1 pushes to $2 without a key (OPSLAKE_INGEST_KEY_FILE is not set);" \
       "opslake serve refuses them with 401" >&2
}

write_configs() {
  local name=$1 key_file=
  if [[ $name == prometheus || $name == alertmanager ]]; then key_file=$(ingest_key_file); fi
  case $name in
    node_exporter)
      mkdir -p "$RUN_DIR/textfile"
      [[ -f "$RUN_DIR/textfile/opslake_test_alert.prom" ]] || set_test_alert 0
      ;;
    prometheus)
      mkdir -p "$RUN_DIR/prometheus-data" "$RUN_DIR/rules"
      [[ $PROM_INTERVAL =~ ^[1-9][0-9]*$ ]] ||
        die "OPSLAKE_PROMETHEUS_INTERVAL_S=$PROM_INTERVAL is not a whole number of seconds (e.g. 5)"
      # A scrape may take the whole interval when it is short; 4 s at most otherwise.
      local scrape_timeout=$((PROM_INTERVAL < 5 ? PROM_INTERVAL : 4))
      cat >"$RUN_DIR/rules/opslake.rules.yml" <<EOF
# Written by infra/services.sh. OpsLakeTestAlert fires on demand: \`infra/services.sh
# fire-alert\` sets opslake_test_alert to 1 through node_exporter's textfile collector.
groups:
  - name: opslake-test
    interval: ${PROM_INTERVAL}s
    rules:
      - alert: OpsLakeTestAlert
        expr: opslake_test_alert{job="node"} > 0
        for: 0s
        labels:
          severity: warning
          entity_id: node-local
        annotations:
          summary: OpsLake test alert (fired on demand)
          description: opslake_test_alert is {{ \$value }} on {{ \$labels.instance }}
EOF
      {
        cat <<EOF
# Written by infra/services.sh; rewritten on every start.
global:
  scrape_interval: ${PROM_INTERVAL}s
  scrape_timeout: ${scrape_timeout}s
  evaluation_interval: ${PROM_INTERVAL}s
rule_files:
  - $RUN_DIR/rules/opslake.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$AM_PORT"]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:$NODE_PORT"]
EOF
        if [[ -n "${OPSLAKE_REMOTE_WRITE_URL:-}" ]]; then
          printf 'remote_write:\n  - url: "%s"\n' "$OPSLAKE_REMOTE_WRITE_URL"
          if [[ -n "$key_file" ]]; then
            printf '    authorization:\n      type: Bearer\n      credentials_file: "%s"\n' \
              "$key_file"
          else
            warn_no_key prometheus "$OPSLAKE_REMOTE_WRITE_URL"
          fi
        fi
      } >"$RUN_DIR/prometheus.yml"
      ;;
    alertmanager)
      mkdir -p "$RUN_DIR/alertmanager-data"
      cat >"$RUN_DIR/alertmanager.yml" <<EOF
# Written by infra/services.sh; rewritten on every start.
route:
  receiver: opslake
  group_by: [alertname, entity_id]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: opslake
    webhook_configs:
      - url: "$WEBHOOK_URL"
        send_resolved: true
EOF
      if [[ -n "$key_file" ]]; then
        cat >>"$RUN_DIR/alertmanager.yml" <<EOF
        http_config:
          authorization:
            type: Bearer
            credentials_file: "$key_file"
EOF
      else
        warn_no_key alertmanager "$WEBHOOK_URL"
      fi
      ;;
    mosquitto)
      cat >"$RUN_DIR/mosquitto.conf" <<EOF
# Written by infra/services.sh: loopback only, anonymous clients allowed.
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
EOF
      ;;
    rsyslog)
      mkdir -p "$RUN_DIR/rsyslog-work"
      {
        cat <<EOF
# Written by infra/services.sh: syslog in on 127.0.0.1:$SYSLOG_PORT (UDP and TCP), written
# as RFC 5424 to $RUN_DIR/syslog-messages.log and, when OPSLAKE_SYSLOG_FORWARD is set,
# forwarded there as RFC 5424.
global(workDirectory="$RUN_DIR/rsyslog-work")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="$SYSLOG_PORT")
input(type="imtcp" address="127.0.0.1" port="$SYSLOG_PORT")
action(type="omfile" file="$RUN_DIR/syslog-messages.log"
       template="RSYSLOG_SyslogProtocol23Format")
EOF
        if [[ -n "${OPSLAKE_SYSLOG_FORWARD:-}" ]]; then
          local host=${OPSLAKE_SYSLOG_FORWARD%:*} fport=${OPSLAKE_SYSLOG_FORWARD##*:}
          [[ "$fport" =~ ^[0-9]+$ && -n "$host" && "$host" != "$OPSLAKE_SYSLOG_FORWARD" ]] \
            || die "OPSLAKE_SYSLOG_FORWARD must be host:port, got '$OPSLAKE_SYSLOG_FORWARD'"
          cat <<EOF
action(type="omfwd" target="$host" port="$fport"
       protocol="${OPSLAKE_SYSLOG_FORWARD_PROTOCOL:-tcp}"
       template="RSYSLOG_SyslogProtocol23Format"
       queue.type="LinkedList" queue.size="100000" action.resumeRetryCount="-1")
EOF
        fi
      } >"$RUN_DIR/rsyslog.conf"
      ;;
  esac
}

command_of() {
  case $1 in
    node_exporter)
      echo "$(find_binary prometheus-node-exporter node_exporter)" \
        "--web.listen-address=127.0.0.1:$NODE_PORT" \
        "--collector.textfile.directory=$RUN_DIR/textfile"
      ;;
    prometheus)
      echo "$(find_binary prometheus)" "--config.file=$RUN_DIR/prometheus.yml" \
        "--storage.tsdb.path=$RUN_DIR/prometheus-data" \
        "--web.listen-address=127.0.0.1:$PROM_PORT" \
        "--web.external-url=http://127.0.0.1:$PROM_PORT/"
      ;;
    alertmanager)
      echo "$(find_binary prometheus-alertmanager alertmanager)" \
        "--config.file=$RUN_DIR/alertmanager.yml" \
        "--storage.path=$RUN_DIR/alertmanager-data" \
        "--web.listen-address=127.0.0.1:$AM_PORT" \
        "--web.external-url=http://127.0.0.1:$AM_PORT/" "--cluster.listen-address="
      ;;
    mosquitto)
      echo "$(find_binary mosquitto)" -c "$RUN_DIR/mosquitto.conf"
      ;;
    rsyslog)
      echo "$(find_binary rsyslogd)" -n -f "$RUN_DIR/rsyslog.conf" \
        -i "$RUN_DIR/rsyslog.rsyslogd.pid"
      ;;
  esac
}

start_one() {
  local name=$1 pid port log="$RUN_DIR/$1.log" cmd deadline
  pid=$(running_pid "$name")
  if [[ -n "$pid" ]]; then
    echo "$name already running (pid $pid)"
    return 0
  fi
  port=$(port_of "$name")
  port_open "$port" && die "$name: port 127.0.0.1:$port is already in use; set its port variable"
  write_configs "$name"
  # Paths under the run dir hold no spaces (checked in main), so word splitting is safe.
  read -r -a cmd <<<"$(command_of "$name")"
  echo "--- $(date -u +%FT%TZ) start: ${cmd[*]}" >>"$log"
  # Not a process-group leader (no job control here), so setsid execs in place: $! is the
  # daemon's own PID, and it leads its own session and process group.
  setsid "${cmd[@]}" >>"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$RUN_DIR/$name.pid"
  deadline=$((SECONDS + READY_TIMEOUT_S))
  until port_open "$port"; do
    if ! alive "$pid"; then
      rm -f "$RUN_DIR/$name.pid"
      tail -n 20 "$log" >&2
      die "$name exited during start; log: $log"
    fi
    if ((SECONDS > deadline)); then
      tail -n 20 "$log" >&2
      die "$name did not listen on 127.0.0.1:$port within ${READY_TIMEOUT_S}s; log: $log"
    fi
    sleep 0.1
  done
  echo "$name started (pid $pid, 127.0.0.1:$port, log $log)"
}

stop_one() {
  local name=$1 pid
  pid=$(running_pid "$name")
  if [[ -z "$pid" ]]; then
    echo "$name not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_GRACE_S * 10))); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    echo "$name did not stop on TERM within ${STOP_GRACE_S}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$RUN_DIR/$name.pid"
  echo "$name stopped (pid $pid)"
}

status_one() {
  local name=$1 pid
  pid=$(running_pid "$name")
  if [[ -n "$pid" ]]; then
    echo "$name running pid=$pid port=$(port_of "$name")"
  else
    echo "$name stopped"
    return 3
  fi
}

set_test_alert() {
  mkdir -p "$RUN_DIR/textfile"
  local tmp="$RUN_DIR/textfile/.opslake_test_alert.prom.tmp"
  printf '# HELP opslake_test_alert 1 makes OpsLakeTestAlert fire.\n# TYPE opslake_test_alert gauge\nopslake_test_alert %s\n' \
    "$1" >"$tmp"
  mv -f "$tmp" "$RUN_DIR/textfile/opslake_test_alert.prom"
}

main() {
  local action=${1:-} rc=0 name
  [[ $# -gt 0 ]] && shift
  [[ "$RUN_DIR" != *[[:space:]]* ]] || die "the run dir must not contain spaces: $RUN_DIR"
  local names=("$@")
  [[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
  for name in "${names[@]}"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || die "unknown service '$name'; one of: ${ALL[*]}"
  done
  case $action in
    start)
      for name in "${names[@]}"; do start_one "$name"; done
      ;;
    stop)
      for ((i = ${#names[@]} - 1; i >= 0; i--)); do stop_one "${names[$i]}"; done
      ;;
    status)
      for name in "${names[@]}"; do status_one "$name" || rc=3; done
      return "$rc"
      ;;
    fire-alert) set_test_alert 1; echo "opslake_test_alert=1: OpsLakeTestAlert fires" ;;
    resolve-alert) set_test_alert 0; echo "opslake_test_alert=0: OpsLakeTestAlert resolves" ;;
    *)
      echo "usage: $0 start|stop|status [${ALL[*]}] | fire-alert | resolve-alert" >&2
      return 2
      ;;
  esac
}

main "$@"
