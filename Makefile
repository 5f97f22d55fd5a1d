# The two commands of the README. Both set up what they need (idempotent).
#   sudo make run    set up, then run the standalone agent on examples/standalone.yaml
#   sudo make test   set up, then run the static checks and every test
# LISTEN=HOST:PORT and CONFIG=PATH override the defaults of `make run`.

CONFIG ?= examples/standalone.yaml
LISTEN ?= 127.0.0.1:9090
PYTEST_ARGS ?=

.PHONY: run test lint top setup setup-test bench images reference

setup:
	@KPOD_TARGET=run scripts/setup.sh

setup-test:
	@KPOD_TARGET=test scripts/setup.sh --test

run: setup
	@KPOD_BANNER=1 .venv/bin/kpod-agent --config $(CONFIG) --listen $(LISTEN)

top:
	@.venv/bin/kpod-agent top --url http://$(LISTEN)

test: setup-test
	@scripts/run-tests.sh $(PYTEST_ARGS)

# ruff, mypy and import-linter (also run by `make test`).
lint: setup-test
	@scripts/lint.sh

bench: setup-test
	@.venv/bin/python bench/run_all.py

# kpod-agent:dev and kpod-operator:dev (plain docker build; the Debian base is
# bootstrapped from the package mirror when no registry answers). Starts a
# Docker engine for the build when none runs, and stops it afterwards.
images: setup-test
	@scripts/images.sh; rc=$$?; scripts/images.sh stop; exit $$rc

# docs/reference/ from the code (CR, node config, CLI, endpoints, metrics);
# a test fails when the committed files are stale.
reference: setup-test
	@.venv/bin/python scripts/gen_reference.py
