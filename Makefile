# The two set-up commands of the README:
#   make repro   install everything (venv, package, data) and run the pipeline (`dvc repro`)
#   make test    install everything and run the test suite
# Both are idempotent: a second run only does what is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision are pinned to the builds this machine's pip finds on local disk; override
# for another platform, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test data browser postgres install benchmark clean-scratch

repro: install data
	$(BIN)/dvc repro

test: install data browser postgres
	$(BIN)/python -m pytest

benchmark: install data
	$(BIN)/python benchmarks/engine_overhead.py
	$(BIN)/python benchmarks/compression.py
	$(BIN)/python benchmarks/repro_time.py

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || { echo "error: $(PYTHON) does not run Python 3.11 or newer (a pyenv shim without that version?); install Python 3.11 or 3.12 or run make PYTHON=python3.12"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

data: install
	bash scripts/fetch_data.sh

browser:
	bash scripts/install_browser.sh

postgres:
	bash scripts/install_postgres.sh

clean-scratch:
	rm -rf reports/scratch models/scratch
