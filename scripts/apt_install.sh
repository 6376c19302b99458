#!/usr/bin/env bash
# Install a Debian package the tests need: apt_install.sh PACKAGE PURPOSE HOW_BY_HAND
# (the caller has checked that it is missing). Needs root or sudo and a Debian mirror.
set -euo pipefail
package=$1 purpose=$2 by_hand=$3
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null; then
  echo "error: $package is missing and apt-get is not available; $by_hand." >&2
  exit 1
fi
echo "$package not found; installing Debian's $package ($purpose)" >&2
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$package"; }; then
  echo "error: could not install $package (needs root or sudo and a Debian mirror)." >&2
  exit 1
fi
