#!/usr/bin/env bash
# Create (once) the project venv in a cache keyed by the hash of the pinned requirements, and
# point .venv at the repo root to it. A 6 GB torch venv must not be rebuilt by every CI clone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# Comments and blank lines do not change what gets installed, so they do not change the key.
KEY=$(cat requirements.txt requirements-nodeps.txt | sed -e "s/#.*//" -e "/^[[:space:]]*$/d" | sha256sum | cut -c1-16)
CACHE=${MMKG_VENV_CACHE:-$HOME/.cache/mmkg/venvs}
VENV="$CACHE/$KEY"
mkdir -p "$CACHE"
# One builder at a time per venv (two `make` runs must not delete each other's half-built .tmp).
exec 9>"$CACHE/$KEY.lock"
flock 9
if [ ! -f "$VENV/.complete" ]; then
  echo "[venv] building $VENV (first time for these requirements; several minutes)" >&2
  rm -rf "$VENV.tmp"
  mkdir -p "$CACHE"
  "$PY" -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install -q --upgrade pip wheel
  "$VENV.tmp/bin/pip" install -q --find-links /opt/wheels -r requirements.txt
  "$VENV.tmp/bin/pip" install -q --no-deps -r requirements-nodeps.txt
  rm -rf "$VENV"
  mv "$VENV.tmp" "$VENV"
  # venv scripts hard-code their interpreter path: rewrite the .tmp prefix after the move.
  grep -rlI --null "$VENV.tmp" "$VENV/bin" | xargs -0 -r sed -i "s#$VENV.tmp#$VENV#g"
  touch "$VENV/.complete"
fi
# The project itself is installed editable so `.venv/bin/mmkg` runs this checkout's code.
ln -sfn "$VENV" .venv
# Checked from / so that the current directory does not shadow what is installed.
HERE=$PWD
INSTALLED=$(cd / && "$HERE/.venv/bin/python" -c 'import jobs, os; print(os.path.dirname(os.path.dirname(jobs.__file__)))' 2>/dev/null || true)
if [ "$INSTALLED" != "$HERE" ] || [ ! -x .venv/bin/mmkg ]; then
  .venv/bin/pip install -q --no-deps --no-build-isolation -e . >&2
fi
