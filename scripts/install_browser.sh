#!/usr/bin/env bash
# Debian's chromium, which the tests use to open reports/index.html headless. Idempotent.
set -euo pipefail
command -v chromium >/dev/null && exit 0
exec bash "$(dirname "$0")/apt_install.sh" chromium "headless report test" \
  "install Chromium and put it on PATH as 'chromium'"
