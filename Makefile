# The two commands that matter: `make demo` (main job on the embedded default) and `make test`.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e ".[test,dev]"
	touch $@

.PHONY: install demo test lint bench
install: $(VENV)/.installed

demo: install
	$(VENV)/bin/bigain demo --out runs/demo

test: install
	$(VPY) -m pytest tests

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(VPY) benchmarks/latency.py
