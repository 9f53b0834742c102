# Two entry points, both from a fresh clone:
#   make run    install what serving needs into .venv and serve the agent on :8080 (embedded
#               Live API simulator unless GEMINI_API_KEY or Vertex AI settings are present)
#   make test   install the test tools too and run the whole suite (lint, types, tests)
# Both install the versions pinned in constraints.txt (the lock; `make lock` renews it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := constraints.txt
PIP := $(BIN)/python -m pip install --quiet --constraint $(LOCK)
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
CHECKOV_STAMP := $(VENV)/checkov/.installed
# uv resolves the lock (universal: every platform and Python >= 3.11); pip installs from it.
UV_VERSION := 0.13.8

.PHONY: install system run test bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Serving only: no test tools (pytest, mypy, locust, selenium, ...), so a first run is quick.
$(RUN_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) -e ".[simulator]"
	touch $@

$(TEST_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) -e ".[test]"
	touch $@ $(RUN_STAMP)

# checkov gets its own venv: it pins packaging<24, and its bc-python-hcl2 installs a module
# named `hcl2` over python-hcl2's. tests/infra/test_infra.py runs $(VENV)/checkov/bin/checkov.
$(CHECKOV_STAMP): infra/checkov-requirements.txt infra/checkov-constraints.txt | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet -r infra/checkov-requirements.txt \
		--constraint infra/checkov-constraints.txt
	touch $@

install: $(TEST_STAMP) $(CHECKOV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/voice-agent serve

# What the tests need beyond Python, from Debian: Chromium and ChromeDriver (the operator page
# and the console in a real browser), PostgreSQL and HAProxy (several instances behind a load
# balancer, sharing one database). Installed once; the tests start their own servers.
SYSTEM_PACKAGES := chromium chromium-driver postgresql haproxy espeak-ng
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

system:
	@if ! dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES); \
	fi

test: install system
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/resampler_streams.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/uplink_blocks.py
	$(BIN)/python bench/barge_in.py
	$(BIN)/python bench/sdk_overhead.py
	$(BIN)/python bench/capacity.py
	$(BIN)/python bench/media_path.py
	$(BIN)/python bench/soak.py --calls 4 --minutes 1
	$(BIN)/python bench/records.py
	$(BIN)/python bench/knowledge.py
	$(BIN)/python bench/tools.py

# Renew the lock: the newest releases pyproject.toml allows, for every platform and Python.
# Then run `make test` (and read the SDK's changelog when google-genai moved).
lock:
	$(PYTHON) -m venv $(VENV)/uv
	$(VENV)/uv/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/uv/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--upgrade --custom-compile-command "make lock" --output-file $(LOCK)
	$(VENV)/uv/bin/uv pip compile infra/checkov-requirements.txt --universal \
		--python-version 3.11 --upgrade --custom-compile-command "make lock" \
		--output-file infra/checkov-constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
