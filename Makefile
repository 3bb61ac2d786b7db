# Pricecast: `make run` starts the whole stack, `make test` runs lint and every test.
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BENCH ?=
PYTEST_ARGS ?=

.PHONY: run test tools lint fmt bench install lock ui test-faults soak status doctor kafka-topics kafka-lag db-shell redis-cli clean

# The locked set (requirements/*.txt, pip-compile with hashes; `make lock` refreshes it):
# torch 2.13.0 (CPU build) first, on its own (see requirements/README.md), then exactly the
# pinned and hashed development set, then the project itself without resolving anything.
PIP_VERSION := 26.3
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	--unsafe-package torch

$(VENV)/.installed: pyproject.toml requirements/dev.txt
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --require-hashes -r requirements/dev.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# Re-resolve the lock from pyproject.toml, keeping every pin that still satisfies it
# (`make lock LOCK_UPGRADE=--upgrade` moves everything to the newest releases).
LOCK_UPGRADE ?=
lock: $(VENV)/.installed
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_UPGRADE) -o requirements/runtime.txt pyproject.toml
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_UPGRADE) --extra dev --extra embedded --extra bench \
		-c requirements/runtime.txt -o requirements/dev.txt pyproject.toml

# The web dashboard's chart library (npm ci, pinned by web/package-lock.json): see ops/tools/build-ui.sh.
UI_VENDOR := services/api/ui/static/vendor/lightweight-charts.js
$(UI_VENDOR): web/package.json web/package-lock.json
	bash ops/tools/build-ui.sh
ui: $(UI_VENDOR)
install: ui

run: install
	$(VENV)/bin/pricecast run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tools:
	bash ops/tools/install-tools.sh

test: lint tools
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(BENCH)

# Every fault under load (PostgreSQL cut 60 s, ...); writes bench/results/faults.json.
test-faults: install
	PRICECAST_FAULTS=full $(VENV)/bin/pytest -q -s tests/faults $(PYTEST_ARGS)

# 30 minutes of steady load (not in CI): RSS, lag, error rate -> bench/results/soak.json.
SOAK_MINUTES ?= 30
soak: install
	$(PY) tests/faults/soak.py --minutes $(SOAK_MINUTES)

doctor: install
	$(VENV)/bin/pricecast doctor

# Operators: a quick look (dependencies, services up, lag, freshness); the rest of the
# tools read the same settings as the services (DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS).
status: install
	$(VENV)/bin/pricecast doctor --only '*.reachable,kafka.broker,kafka.consumer_lag,data.stale_prices,runtime.ports'

kafka-topics: install
	$(VENV)/bin/pricecast doctor --show topics

kafka-lag: install
	$(VENV)/bin/pricecast doctor --show lag

db-shell: install
	$(VENV)/bin/pricecast doctor --shell db

redis-cli: install
	$(VENV)/bin/pricecast doctor --shell redis

clean:
	rm -rf .pricecast .pytest_cache .mypy_cache .ruff_cache
