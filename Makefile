# The two quick-start commands: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: serve test install dev lint typecheck unit proto

serve: install  ## install into .venv and serve the bundled demo model on 127.0.0.1:8000
	$(VENV)/bin/clipserve serve

test: dev lint typecheck unit  ## install dev dependencies, then ruff, mypy and the whole test suite

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[torch]'
	touch $@

dev: $(VENV)/.installed-dev
$(VENV)/.installed-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

lint:
	$(VENV)/bin/ruff check service tests scripts benchmarks

typecheck:
	$(VENV)/bin/mypy

unit:
	$(VENV)/bin/pytest -q

proto:  ## regenerate the gRPC Python code from proto/
	$(PY) -m service.protocol.codegen
