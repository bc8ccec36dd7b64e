#!/usr/bin/env bash
# Make sure headless Chromium + chromedriver (Debian packages) are there for the `browser` tests.
# Idempotent: does nothing when both are installed. Installs them with apt when run as root;
# otherwise says how and exits 0, so `make test` still runs (the browser tests then skip, unless
# MMKG_REQUIRE_BROWSER=1, as CI sets, makes a missing browser a failure).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[browser] installing chromium + chromium-driver (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
  exit 0
fi
echo "[browser] chromium/chromedriver missing; install them with: sudo apt-get install chromium chromium-driver" >&2
if [ "${MMKG_REQUIRE_BROWSER:-0}" = "1" ]; then exit 1; fi
exit 0
