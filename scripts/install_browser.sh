#!/usr/bin/env bash
# Debian's chromium, which the tests use to open reports/index.html headless. Idempotent.
set -euo pipefail
command -v chromium >/dev/null && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null; then
  echo "error: chromium is missing and apt-get is not available; install Chromium and put it on PATH as 'chromium'." >&2
  exit 1
fi
echo "chromium not found; installing Debian's chromium (headless report test)" >&2
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; }; then
  echo "error: could not install chromium (needs root or sudo and a Debian mirror)." >&2
  exit 1
fi
