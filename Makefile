# Two entry points, both from a fresh clone:
#   make run    install into .venv and serve the agent on :8080 (embedded Live API simulator
#               unless GEMINI_API_KEY or Vertex AI settings are present)
#   make test   install into .venv and run the whole suite (lint, types, tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_STAMP := $(VENV)/checkov/.installed

.PHONY: install browser run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# checkov gets its own venv: it pins packaging<24, and its bc-python-hcl2 installs a module
# named `hcl2` over python-hcl2's. tests/test_infra.py runs $(VENV)/checkov/bin/checkov.
$(CHECKOV_STAMP): infra/checkov-requirements.txt | $(STAMP)
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet -r infra/checkov-requirements.txt
	touch $(CHECKOV_STAMP)

install: $(STAMP) $(CHECKOV_STAMP)

run: $(STAMP)
	$(BIN)/voice-agent serve

# The operator page is tested in a real headless browser: Debian's Chromium and ChromeDriver.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium chromium-driver

browser: $(CHROMEDRIVER)

test: install browser
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
	$(BIN)/python bench/records.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
