# Thin wrappers over `python -m competition …`. Every target depends on the virtual environment.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
COMPETITION ?= dogs-vs-cats
DATA ?= inputs/$(COMPETITION)
K ?= 5
SEED ?= 42

EXP ?= resnet18
CONFIG ?= configs/$(COMPETITION)/$(EXP).yaml
# Processes for `accelerate launch` (e.g. NPROC=2 on two GPUs; LAUNCH_ARGS="--multi_gpu" or "--cpu").
NPROC ?= 1
LAUNCH_ARGS ?=
empty :=
space := $(empty) $(empty)
comma := ,
FOLD_ARGS = $(if $(FOLDS),trainer.folds=[$(subst $(space),$(comma),$(strip $(FOLDS)))],)
LAUNCH = $(VENV)/bin/accelerate launch --num_processes $(NPROC) --num_machines 1 --mixed_precision no --dynamo_backend no $(LAUNCH_ARGS)

.PHONY: install demo test test-fast lint folds sample train clean

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

# Trains the listed folds (all by default) of configs/<competition>/<exp>.yaml through accelerate launch.
train: install
	$(LAUNCH) train.py --config $(CONFIG) data.data_dir=$(DATA) $(FOLD_ARGS) $(ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check competition tests train.py

# The whole loop on a synthetic SAMPLE of dogs-vs-cats: data → folds → 5-fold training → CV score.
demo: install
	$(PY) -m competition sample dogs-vs-cats --out inputs/sample/dogs-vs-cats --force
	$(PY) -m competition folds dogs-vs-cats --data inputs/sample/dogs-vs-cats --out folds/sample-dogs-vs-cats.csv
	rm -rf runs/dogs-vs-cats/sample
	$(LAUNCH) train.py --config configs/dogs-vs-cats/sample.yaml

clean:
	rm -rf runs submissions/*/ folds/*.csv .cache
