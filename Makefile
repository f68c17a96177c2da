# Two commands matter: `make run` (the embedded city) and `make test` (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml | cksum | cut -d' ' -f1)
API_PORT ?= 8000
# 1884, not MQTT's 1883: a system Mosquitto often holds 1883 already.
MQTT_PORT ?= 1884
PYTEST_ARGS ?=

.PHONY: setup run test lint format schemas lock clean bench bench-backlog bench-broker faults

$(STAMP):
	@$(PY) -c 'import sys; sys.exit("fabcity needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	rm -f $(VENV)/.installed-*
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/fabcity up --api-port $(API_PORT) --mqtt-port $(MQTT_PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m schemas.generate --check

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Throughput, freshness, query time and memory against this machine's own limits; writes
# docs/benchmarks.md. Needs PostgreSQL on 127.0.0.1:5432 (user postgres), mosquitto and
# redis-server binaries (it starts its own on spare ports). About 10 minutes.
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# What the broker's autosave costs (deploy/mosquitto/mosquitto.conf): docs/scaling.md.
bench-broker: setup
	$(BIN)/python -m bench.broker_persistence --messages 100000 --intervals 1000,10000 --seconds 5

# The same, plus one bridge draining a backlog of a million messages (memory stays bounded).
bench-backlog: setup
	$(BIN)/python -m bench.run --backlog 1000000 $(BENCH_ARGS)

# The fault tests at full size (CI runs them scaled down).
faults: setup
	FABCITY_FAULT_EVENTS=200000 $(BIN)/pytest tests/faults -v $(PYTEST_ARGS)

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: setup
	$(BIN)/python -m schemas.generate

# Re-pin every dependency (needs network to PyPI).
lock: setup
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile -q --universal --python-version 3.11 pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile -q --universal --python-version 3.11 --extra dev pyproject.toml -o requirements-dev.lock

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
