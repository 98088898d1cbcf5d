# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint unit integration bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/vitrine demo

PACKAGES := pipeline db worker embedded ops cli

lint: install
	$(VENV)/bin/ruff check $(PACKAGES) tests
	$(VENV)/bin/ruff format --check $(PACKAGES) tests
	$(VENV)/bin/mypy $(PACKAGES)

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

# Small smoke size of every benchmark: checks they run and emit JSON, not speed.
bench-smoke: install
	$(VENV)/bin/vitrine bench --size 64 --json

test: lint unit integration bench-smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
