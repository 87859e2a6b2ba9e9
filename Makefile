# Ostiary: `make demo` and `make test` are the README's two commands; `make help` lists every target.
#
# Everything runs inside ./.venv, which the first target that needs it creates. Installation is recorded in stamp
# files inside .venv that depend on pyproject.toml, so re-runs only reinstall after the dependencies change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check
BIN := $(VENV)/bin

# The interpreter that creates the venv: python3.11 if present, else the first python3.x >= 3.11 that runs
# (pyenv shims exist for versions that are not selected, so try each one instead of trusting `command -v`).
# Override with `make PYTHON=/path/to/python3 test`.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3.14 python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo "$$p"; break; }; \
	done)

# `make bench BENCH=cose` runs benchmarks/bench_cose.py only; empty runs every benchmarks/bench_*.py.
# BENCH_ARGS go to each benchmark's main(argv), e.g. `make bench BENCH=cose BENCH_ARGS=--quick`.
BENCH ?=
BENCH_ARGS ?=

STRICT_PACKAGES := ace_core policies
CHECKED_PACKAGES := as_server resource_server client_sdk ostiary

.PHONY: help test demo bench lint typecheck clean

help:
	@echo "Ostiary make targets (all run inside ./$(VENV), created on first use):"
	@echo "  make demo        install the project and run the end-to-end scenario (ostiary demo)"
	@echo "  make test        install with test extras; run lint, type checks and the whole test suite"
	@echo "  make lint        ruff check and ruff format --check"
	@echo "  make typecheck   mypy --strict on $(STRICT_PACKAGES); mypy (check_untyped_defs) on the rest"
	@echo "  make bench       run every benchmarks/bench_*.py; BENCH=cose runs bench_cose.py only,"
	@echo "                   BENCH_ARGS='--quick' is passed to each benchmark"
	@echo "  make clean       remove $(VENV), caches and build directories"
	@echo "  make help        this list (the default goal)"

$(VPY):
	@test -n "$(PYTHON)" || { echo "error: no python >= 3.11 found; run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	@echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# DTLSSocket (aiocoap's tinydtls extra, the bootstrap server's coaps://) builds tinydtls from source with the GNU
# autotools; install them from the system's packages when one is missing (Debian/Ubuntu names).
BUILD_TOOLS := autoreconf aclocal libtoolize pkg-config
define ensure_build_tools
	@missing=$$(for t in $(BUILD_TOOLS); do command -v $$t >/dev/null 2>&1 || echo $$t; done); \
	if [ -n "$$missing" ]; then \
		echo "installing autoconf automake libtool pkg-config (missing: $$(echo $$missing)) to build DTLSSocket"; \
		sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$sudo apt-get install -y autoconf automake libtool pkg-config >/dev/null || \
			{ $$sudo apt-get update >/dev/null && $$sudo apt-get install -y autoconf automake libtool pkg-config >/dev/null; }; \
	fi
endef

# pip -q still prints errors and warnings; the stamp is touched only after a successful install.
$(VENV)/.installed: pyproject.toml | $(VPY)
	$(ensure_build_tools)
	$(PIP) install --quiet -e '.[all]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VPY)
	$(ensure_build_tools)
	$(PIP) install --quiet -e '.[all,test]'
	@# The console's browser tests drive the system's Chromium (Debian package; never `playwright install`).
	@command -v chromium >/dev/null 2>&1 || { sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$sudo apt-get install -y chromium || { $$sudo apt-get update && $$sudo apt-get install -y chromium; } || \
		echo "warning: could not install chromium; the console's browser tests are skipped" >&2; }
	@touch $@

$(VENV)/.installed-bench: pyproject.toml | $(VPY)
	$(ensure_build_tools)
	$(PIP) install --quiet -e '.[all,test,bench]'
	@touch $@

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy $(STRICT_PACKAGES)
	$(BIN)/mypy $(CHECKED_PACKAGES)

test: lint typecheck
	$(BIN)/pytest

demo: $(VENV)/.installed
	$(BIN)/ostiary demo

bench: $(VENV)/.installed-bench
	@command -v wrk >/dev/null 2>&1 || { sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
		echo "installing wrk (the HTTP load generator of bench_as) with apt-get"; \
		$$sudo apt-get install -y wrk || { $$sudo apt-get update && $$sudo apt-get install -y wrk; } || \
		echo "warning: could not install wrk; bench_as reports its HTTP rows as n/a" >&2; }
	$(VPY) -m benchmarks $(BENCH) $(if $(strip $(BENCH_ARGS)),-- $(BENCH_ARGS))

clean:
	rm -rf $(VENV) build dist .eggs *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
