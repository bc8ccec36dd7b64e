#!/usr/bin/env bash
# Create (once) the project venv in a cache keyed by the hash of the pinned requirements, and
# give the checkout a thin .venv on top of it (below). A 6 GB torch venv must not be rebuilt by every CI clone.
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
# The shared venv holds the dependencies only. Each checkout gets its own thin venv (.venv, no
# pip, a few kB) whose site-packages sees the shared one through a .pth file and imports `mmkg`
# from this checkout, so two clones sharing the dependencies never run each other's code.
HERE=$PWD
# An older layout installed the project itself into the shared venv: a stale copy would shadow nothing
# (the checkout comes first on sys.path) but would confuse `pip list`, so it goes.
if ls "$VENV"/lib/python3*/site-packages/__editable__*mmkg* >/dev/null 2>&1 \
   || ls -d "$VENV"/lib/python3*/site-packages/mmkg-*.dist-info >/dev/null 2>&1; then
  "$VENV/bin/pip" uninstall -y -q mmkg >&2 || true
fi
exec 9>&-
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -L .venv ] && rm .venv
LOCAL_SITE=$(ls -d .venv/lib/python3*/site-packages 2>/dev/null | head -1 || true)
if [ -z "$LOCAL_SITE" ] || [ "$(cat "$LOCAL_SITE/00-mmkg-checkout.pth" 2>/dev/null)" != "$HERE" ] \
   || ! grep -qF "\"$SITE\"" "$LOCAL_SITE/zz-mmkg-deps.pth" 2>/dev/null || [ ! -x .venv/bin/mmkg ]; then
  rm -rf .venv .venv.tmp
  "$VENV/bin/python" -m venv --without-pip .venv.tmp
  mv .venv.tmp .venv
  # the interpreter links of a venv are absolute; only the site dir's name is needed here
  LOCAL_SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$HERE" > "$LOCAL_SITE/00-mmkg-checkout.pth"
  echo "import site; site.addsitedir(\"$SITE\")" > "$LOCAL_SITE/zz-mmkg-deps.pth"
  for tool in mmkg; do
    printf '#!%s\nimport sys\nfrom mmkg.jobs.cli import main\nsys.exit(main())\n' "$HERE/.venv/bin/python" > .venv/bin/$tool
    chmod +x .venv/bin/$tool
  done
fi
