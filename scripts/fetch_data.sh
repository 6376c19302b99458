#!/usr/bin/env bash
# Make sure data/raw holds the four Fashion-MNIST IDX files that data.dvc records.
# Installs Debian's dataset-fashion-mnist when it is missing, then lets DVC copy and hash-check
# the files (`dvc update data.dvc`) against the data.dvc committed to git (a data.dvc rewritten in
# the working tree is put back first), then checks each file's decompressed md5. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=/usr/share/datasets/fashion-mnist
DVC=${DVC:-.venv/bin/dvc}

if [ ! -f "$SRC/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST not found in $SRC; installing Debian's dataset-fashion-mnist" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! command -v apt-get >/dev/null; then
    echo "error: apt-get is not available. Put the four Fashion-MNIST .gz files in $SRC" \
         "and run this again." >&2
    exit 1
  fi
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; }; then
    echo "error: could not install dataset-fashion-mnist (needs root or sudo and a Debian mirror)." >&2
    exit 1
  fi
fi

# The record to check against is the committed one: DVC may have rewritten the working copy.
committed=$(git show HEAD:data.dvc 2>/dev/null || true)
if [ -n "$committed" ] && [ "$committed" != "$(cat data.dvc)" ]; then
  echo "data.dvc differs from the committed record; putting the committed one back" \
       "(commit a deliberate change to it first)" >&2
  git checkout HEAD -- data.dvc
fi

# Always through `dvc update` (a second or so): it also puts the files into the DVC cache,
# without which `dvc exp run` cannot restore data/raw in its temporary copies.
before=$(git hash-object data.dvc)
"$DVC" update -q data.dvc
if [ "$(git hash-object data.dvc)" != "$before" ]; then
  git diff --stat -- data.dvc >&2 || true
  git checkout -- data.dvc 2>/dev/null || true
  echo "error: the files in $SRC differ from those data.dvc records; data.dvc was left unchanged." >&2
  exit 1
fi
"${PYTHON:-.venv/bin/python}" -c 'import sys; from resnet_review.data import DataIntegrityError, verify_raw
try:
    verify_raw("data/raw")
except DataIntegrityError as err:
    sys.exit(f"error: {err}")'
echo "data/raw in place and verified against data.dvc and each file's md5"
