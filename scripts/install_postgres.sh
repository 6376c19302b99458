#!/usr/bin/env bash
# Debian's PostgreSQL server binaries (initdb, pg_ctl), which the tests use to start a throwaway
# server for an Optuna study shared by several workers. Only the binaries: no cluster is created
# or started. Idempotent.
set -euo pipefail
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && exit 0
command -v initdb >/dev/null && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null; then
  echo "error: PostgreSQL's initdb is missing and apt-get is not available; install the PostgreSQL server and put its bin folder on PATH." >&2
  exit 1
fi
echo "initdb not found; installing Debian's postgresql (shared Optuna study test)" >&2
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql; }; then
  echo "error: could not install postgresql (needs root or sudo and a Debian mirror)." >&2
  exit 1
fi
