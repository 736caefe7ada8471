# imgorigin: `make run` serves the sample images, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NODE_CLIENTS := tests/clients/node

.PHONY: run test lint typecheck unit install clean bench soak profile docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,s3]'
	touch $@

install: $(VENV)/.installed

$(NODE_CLIENTS)/node_modules/.installed: $(NODE_CLIENTS)/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix $(NODE_CLIENTS)
	touch $@

run: install
	$(VENV)/bin/imgorigin serve --dev

lint: install
	$(VENV)/bin/ruff check src tests

typecheck: install
	$(VENV)/bin/mypy

unit: install $(NODE_CLIENTS)/node_modules/.installed
	$(PY) -m pytest

test: lint typecheck unit

bench: install
	$(PY) bench/stream.py
	$(PY) bench/run.py

soak: install
	$(PY) bench/soak.py

profile: install
	$(PY) bench/profile.py --workloads W1,W4

docs: install
	$(VENV)/bin/imgorigin settings > docs/configuration.md

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache $(NODE_CLIENTS)/node_modules
