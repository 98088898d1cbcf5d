# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint unit integration bench-smoke audit clean wheel-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/vitrine demo

# The rooms of the one package `vitrine` (vitrine/ links to them) and the producer.
ROOMS := pipeline sources db worker embedded ops bench cli api vitrine/__init__.py vitrine/__main__.py vitrine/settings.py

lint: install
	$(VENV)/bin/ruff check $(ROOMS) producer/src tools tests
	$(VENV)/bin/ruff format --check $(ROOMS) producer/src tools tests
	$(VENV)/bin/mypy -p vitrine
	$(VENV)/bin/mypy producer/src tools

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
	$(VENV)/bin/vitrine bench catalog --items 30 --foreign 22 --json
	$(VENV)/bin/vitrine bench desk --images 2000 --runs 2 --json
	$(VENV)/bin/vitrine bench train --steps 2 --batch 32 --architectures resnet20 --json

test: lint unit integration bench-smoke

# Known vulnerabilities in what .venv has installed (pip-audit, tools/audit.py). Needs the
# advisory services on the network, so it is not part of `test`; services are tried in
# order until one has data, and "unreachable" is one line and exit status 3.
AUDIT_SERVICES ?= pypi osv

audit: install
	$(PY) tools/audit.py $(AUDIT_SERVICES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The wheel as users install it: one name, its data, no tests; then a fresh venv and
# `vitrine demo` (downloads dependencies, so `make test` leaves it out).
wheel-check: install
	$(PY) tools/wheel_check.py --install

