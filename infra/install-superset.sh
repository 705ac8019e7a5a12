#!/usr/bin/env bash
# Install Apache Superset 6.1 in its own virtualenv (its pins clash with the pipeline's .venv),
# exactly as locked in infra/superset/requirements.txt (hash-checked).
#
# Idempotent: the venv records the lock's checksum; when it matches nothing is done, when the
# lock changed the venv is synced to it (packages added, upgraded and removed).
#
# Environment (defaults in brackets):
#   OPSLAKE_SUPERSET_VENV    where the venv lives [${XDG_CACHE_HOME:-~/.cache}/opslake/superset-venv]
#                            outside the repository: it is ~870 MB and survives `make clean`
#   OPSLAKE_SUPERSET_PYTHON  interpreter to build it from [the pipeline venv's base Python 3.11,
#                            else python3.11]
#
# Usage: bash infra/install-superset.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCK="$REPO/infra/superset/requirements.txt"
VENV=${OPSLAKE_SUPERSET_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/opslake/superset-venv}
STAMP="$VENV/.opslake-lock.sha256"

die() { echo "install-superset: $*" >&2; exit 1; }

[[ -f "$LOCK" ]] || die "missing $LOCK"
# The stamp names the bytecode too: a venv synced before it was compiled is synced again.
want="$(sha256sum "$LOCK" | cut -d' ' -f1) bytecode"
if [[ -x "$VENV/bin/superset" && -f "$STAMP" && "$(<"$STAMP")" == "$want" ]]; then
  echo "install-superset: $VENV matches the lock; nothing to install"
  exit 0
fi

# Superset 6.1 supports Python 3.10-3.12; build from the same 3.11 the pipeline uses.
PY=${OPSLAKE_SUPERSET_PYTHON:-}
if [[ -z "$PY" && -x "$REPO/.venv/bin/python" ]]; then
  PY=$("$REPO/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
fi
PY=${PY:-$(command -v python3.11 || true)}
[[ -n "$PY" && -x "$PY" ]] \
  || die "no Python 3.11 found; set OPSLAKE_SUPERSET_PYTHON=/path/to/python3.11"
"$PY" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
  || die "$PY is not Python 3.10-3.12 (Superset 6.1 needs one); set OPSLAKE_SUPERSET_PYTHON"

# uv resolves nothing here (the lock is complete) but installs ~150 wheels in seconds.
UV=""
for candidate in "$REPO/.venv/bin/uv" "$(command -v uv || true)"; do
  [[ -n "$candidate" && -x "$candidate" ]] && { UV=$candidate; break; }
done

echo "install-superset: building $VENV from $LOCK with $PY"
mkdir -p "$(dirname "$VENV")"
rm -f "$STAMP"
if [[ -n "$UV" ]]; then
  [[ -x "$VENV/bin/python" ]] || "$UV" venv --quiet --python "$PY" "$VENV"
  # Compiled as installed (pip does that by default): where PYTHONDONTWRITEBYTECODE is set,
  # every Superset process compiled its ~8,000 modules again (13 s to import, 4 s compiled).
  VIRTUAL_ENV="$VENV" "$UV" pip sync --quiet --compile-bytecode --require-hashes "$LOCK"
else
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$LOCK"
fi
# `superset --help` refuses to run without a secret key: import what the server loads instead.
"$VENV/bin/python" -c 'import superset.app, duckdb_engine, flask_caching, psycopg2' \
  || die "Superset does not import in $VENV; see the error above"
echo "$want" >"$STAMP"
echo "install-superset: Superset $("$VENV/bin/python" -c \
  'import importlib.metadata as m; print(m.version("apache-superset"))') ready in $VENV"
