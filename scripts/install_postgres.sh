#!/usr/bin/env bash
# Debian's PostgreSQL server binaries (initdb, pg_ctl), which the tests use to start a throwaway
# server for an Optuna study shared by several workers. Only the binaries: no cluster is created
# or started. Idempotent.
set -euo pipefail
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && exit 0
command -v initdb >/dev/null && exit 0
exec bash "$(dirname "$0")/apt_install.sh" postgresql "shared Optuna study test" \
  "install the PostgreSQL server and put its bin folder on PATH"
