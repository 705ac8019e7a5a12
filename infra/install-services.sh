#!/usr/bin/env bash
# Install the real services OpsLake's integration tests and demos run on loopback:
# Prometheus, node_exporter, Alertmanager, Mosquitto, rsyslog (Debian/Ubuntu packages), and
# Chromium, which the report tests run headless to render pages, with a CJK font so Chinese
# text renders (WenQuanYi Zen Hei, 7 MB), rsyslog-gnutls (rsyslog's TLS driver, with which
# it forwards syslog over TLS in the tests), and poppler-utils (pdftotext, pdftoppm), with
# which the service-report test reads back the PDFs it renders; and PostgreSQL, which
# `opslake cluster up` runs (its own data dir under the state dir) as Dagster's instance;
# and a Java 17 runtime for Spark (pyspark, infra/spark), which a test reads gold with.
#
# Idempotent: when every binary is already present nothing is installed. The packages'
# maintainer scripts must not leave daemons running on their default ports (infra/services.sh
# starts each one with its own config, data dir and port), so a policy-rc.d that refuses
# every start is in place during the install, and any daemon that was started anyway is
# stopped afterwards.
#
# Every package is installed at the version pinned in infra/debian-packages.txt (the one place
# Debian versions are named); a package missing there stops the script before anything runs.
#
# Usage: infra/install-services.sh        (as root, or with sudo available)
#        infra/install-services.sh --check-pins   print NAME=VERSION of each package it installs
#        infra/install-services.sh --write-pins   rewrite the pins from what dpkg has installed
set -euo pipefail

PACKAGES=(prometheus prometheus-node-exporter prometheus-alertmanager mosquitto rsyslog chromium
          poppler-utils openjdk-17-jre-headless)
# Binary each package provides (same order as PACKAGES).
BINARIES=(prometheus prometheus-node-exporter prometheus-alertmanager mosquitto rsyslogd chromium
          pdftotext java)
# Process names the packages' init scripts would start.
DAEMONS=(prometheus prometheus-node-exporter prometheus-alertmanager mosquitto rsyslogd postgres)

EXTRAS=(fonts-wqy-zenhei rsyslog-gnutls postgresql)  # checked below without a binary
PIN_FILE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/debian-packages.txt"

die() { echo "install-services: $*" >&2; exit 1; }

declare -A PIN=()
while read -r name version _; do
  [[ -z "$name" || "$name" == \#* ]] || PIN[$name]=$version
done <"$PIN_FILE"
for p in "${PACKAGES[@]}" "${EXTRAS[@]}"; do
  [[ -n "${PIN[$p]:-}" ]] || die "$p has no version in $PIN_FILE; add '$p VERSION' (dpkg-query -W $p)"
done
pinned() { for p in "$@"; do printf '%s=%s\n' "$p" "${PIN[$p]}"; done; }

case "${1:-}" in
  --check-pins) pinned "${PACKAGES[@]}" "${EXTRAS[@]}"; exit 0 ;;
  --write-pins)
    { grep '^#' "$PIN_FILE"
      dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" "${EXTRAS[@]}" | sort
    } >"$PIN_FILE.new" || die "dpkg-query failed: install the packages first"
    mv "$PIN_FILE.new" "$PIN_FILE"; echo "install-services: pinned what is installed in $PIN_FILE"
    exit 0 ;;
  "") ;;
  *) die "unknown option $1 (use --check-pins or --write-pins)" ;;
esac

have_binary() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" ]]
}

missing=()
for i in "${!PACKAGES[@]}"; do
  have_binary "${BINARIES[$i]}" || missing+=("${PACKAGES[$i]}")
done
# A font has no binary: ask fontconfig whether any font covers Chinese.
if ! { command -v fc-list >/dev/null 2>&1 && [[ -n "$(fc-list :lang=zh family)" ]]; }; then
  missing+=(fonts-wqy-zenhei)
fi
# rsyslog's TLS driver is a loadable module, not a binary.
have_gtls() { compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null; }
have_gtls || missing+=(rsyslog-gnutls)
# PostgreSQL's server programs live in a versioned directory, not on PATH.
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_postgres || missing+=(postgresql)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-services: all present (${BINARIES[*]} postgres); nothing to install"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 \
  || die "apt-get is not available; install these packages by hand: ${missing[*]}"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 \
    || die "not root and no sudo; run as root to install: ${missing[*]}"
  SUDO=(sudo)
fi

# Daemons running before the install are someone else's: only stop ones that appear.
declare -A before=()
for d in "${DAEMONS[@]}"; do
  for pid in $(pgrep -x "${d:0:15}" 2>/dev/null || true); do before[$pid]=1; done
done

POLICY=/usr/sbin/policy-rc.d
BACKUP=""
restore_policy() {
  if [[ -n "$BACKUP" ]]; then
    "${SUDO[@]}" mv -f "$BACKUP" "$POLICY"
  else
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
if [[ -e "$POLICY" ]]; then
  BACKUP=$("${SUDO[@]}" mktemp "${POLICY}.opslake.XXXXXX")
  "${SUDO[@]}" cp -p "$POLICY" "$BACKUP"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# written by opslake infra/install-services.sh: start no daemons\nexit 101\n' \
  | "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 755 "$POLICY"

mapfile -t specs < <(pinned "${missing[@]}")
echo "install-services: installing ${specs[*]}"
export DEBIAN_FRONTEND=noninteractive
# A stale package index makes 'install' fail with 404s; refresh once and retry.
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${specs[@]}"; then
  "${SUDO[@]}" apt-get update -q || die "apt-get update failed (network or apt sources?)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${specs[@]}" \
    || die "apt-get install failed: ${specs[*]}; if apt says a version was not found, Debian" \
           "replaced it: install the current one, then \`make debian-pins\` and commit" \
           "infra/debian-packages.txt"
fi

# Anything the packages started despite policy-rc.d (e.g. a postinst that does not use
# invoke-rc.d) is stopped: TERM, then KILL.
started=()
for d in "${DAEMONS[@]}"; do
  for pid in $(pgrep -x "${d:0:15}" 2>/dev/null || true); do
    [[ -n "${before[$pid]:-}" ]] || started+=("$pid")
  done
done
if [[ ${#started[@]} -gt 0 ]]; then
  echo "install-services: stopping daemons the packages started: ${started[*]}"
  "${SUDO[@]}" kill -TERM "${started[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=()
    for pid in "${started[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [[ ${#alive[@]} -eq 0 ]] && break
    sleep 0.2
  done
  [[ ${#alive[@]} -eq 0 ]] || "${SUDO[@]}" kill -KILL "${alive[@]}" 2>/dev/null || true
fi

for i in "${!PACKAGES[@]}"; do
  have_binary "${BINARIES[$i]}" || die "${PACKAGES[$i]} installed but ${BINARIES[$i]} not found"
done
have_postgres || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
have_gtls || die "rsyslog-gnutls installed but no /usr/lib/*/rsyslog/lmnsd_gtls.so"
echo "install-services: installed ${missing[*]}"
