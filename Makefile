# Pricecast: `make run` starts the whole stack, `make test` runs lint and every test.
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BENCH ?=
PYTEST_ARGS ?=

.PHONY: run test tools lint fmt bench install ui test-faults soak status doctor kafka-topics kafka-lag db-shell redis-cli clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,embedded]'
	touch $@

install: $(VENV)/.installed

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
