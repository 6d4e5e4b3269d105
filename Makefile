# Relais: `make run` starts the whole hub; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export RELAIS_ENV ?= development

.PHONY: install run test demo bench bench-scale lint format migrate worker-registry worker-referrals worker-notifications clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	@echo "Creating $(VENV) and installing Relais with its development tools ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install  ## The three services with their workers, on the embedded PostgreSQL unless DATABASE_URL is set
	$(BIN)/python deploy/local.py

test: install  ## The whole test suite against a real PostgreSQL (TEST_DATABASE_URL, Docker, or embedded)
	$(BIN)/python -m pytest

demo: install  ## Against a hub started with `make run`: demo partners, a case, its journey live
	$(BIN)/python tools/demo.py

bench: install  ## The measures of SPEC section 10 (scale reduced); installs the bench extra
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

bench-scale: install  ## Scale: 1,000,000 cases and 5,000,000 events (long)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.scale

lint: install  ## ruff and the architecture contract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install  ## Apply the migrations to DATABASE_URL
	$(BIN)/python -c 'import os; from shared.migrate import upgrade; upgrade(os.environ["DATABASE_URL"])'

worker-%: install  ## One service's workers alone, e.g. `make worker-referrals`
	$(BIN)/python -m services.$*.worker

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
