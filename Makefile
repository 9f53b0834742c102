# Two entry points, both from a fresh clone:
#   make run    install into .venv and serve the agent on :8080 (embedded Live API simulator
#               unless GEMINI_API_KEY or Vertex AI settings are present)
#   make test   install into .venv and run the whole suite (lint, types, tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/voice-agent serve

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/barge_in.py
	$(BIN)/python bench/sdk_overhead.py
	$(BIN)/python bench/capacity.py
	$(BIN)/python bench/soak.py --calls 4 --minutes 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
