# Thin wrappers over `python -m competition …`. Every target depends on the virtual environment.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
COMPETITION ?= dogs-vs-cats
DATA ?= inputs/$(COMPETITION)
K ?= 5
SEED ?= 42

.PHONY: install demo test lint folds sample clean

install: $(VENV)/.installed

# Re-installs only when pyproject.toml changes; torch/torchvision come from the local wheel cache.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

sample: install
	$(PY) -m competition sample $(COMPETITION) --out $(DATA)

folds: install
	$(PY) -m competition folds $(COMPETITION) --data $(DATA) --k $(K) --seed $(SEED) $(if $(GROUP),--group-duplicates,)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check competition tests train.py

demo: install
	$(PY) -m competition sample dogs-vs-cats --out inputs/demo-dogs-vs-cats --force
	$(PY) -m competition folds dogs-vs-cats --data inputs/demo-dogs-vs-cats --out folds/demo-dogs-vs-cats.csv

clean:
	rm -rf runs submissions/*/ folds/*.csv .cache
