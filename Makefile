# The two commands of the README, plus lint. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Nudge needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)  ## the whole stack: Temporal dev server + UI, worker, API, SQLite under .nudge/
	$(BIN)/nudge dev

test: $(STAMP)  ## the whole suite (PostgreSQL when NUDGE_TEST_DATABASE_URL is set, else SQLite)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check nudge tests bench
	$(BIN)/ruff format --check nudge tests bench
	$(BIN)/mypy nudge

format: $(STAMP)
	$(BIN)/ruff check --fix nudge tests bench
	$(BIN)/ruff format nudge tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
