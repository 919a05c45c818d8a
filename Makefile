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
# Without --cpu, accelerate launch sets OMP_NUM_THREADS=1 in every process: right beside GPUs, but on a machine
# without one it leaves all cores but one idle. There each process gets its share of the cores instead.
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
THREADS ?= $(if $(GPU),,$(shell n=$$(( $$(nproc) / $(NPROC) )); echo $$(( n > 0 ? n : 1 ))))
LAUNCH = $(VENV)/bin/accelerate launch --num_processes $(NPROC) --num_machines 1 --mixed_precision no --dynamo_backend no \
	$(if $(THREADS),--num_cpu_threads_per_process $(THREADS),) $(LAUNCH_ARGS)

EXPS ?= $(EXP)
TTA ?= none
WEIGHTS ?= equal

.PHONY: install demo test lint folds sample train predict submit runs report clean bench leaderboard-cifar-10 leaderboard-dogs-vs-cats

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

# Ensembles every fold of each experiment in EXPS into submissions/<competition>/<name>.csv (+ res.csv, sidecar).
predict: install
	$(LAUNCH) -m competition predict $(COMPETITION) --data $(DATA) --exps $(EXPS) --tta $(TTA) --weights $(WEIGHTS) $(if $(NAME),--name $(NAME),) $(PREDICT_ARGS)

# Validates FILE again and uploads it with the official kaggle client (DRY_RUN=1 to only show what would be sent).
submit: install
	$(PY) -m competition submit $(FILE) -m "$(MSG)" --competition $(COMPETITION) --data $(DATA) $(if $(DRY_RUN),--dry-run,)

runs: install
	$(PY) -m competition runs $(if $(filter command line,$(origin COMPETITION)),$(COMPETITION),)

report: install
	$(PY) -m competition report $(EXP) --competition $(COMPETITION)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Throughput benchmark on the real data in ../shared/data (BENCH_ARGS="--quick", "--only loader,train", "--data-root DIR").
bench: install
	$(PY) bench/bench.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check competition tests train.py

# The whole loop on a synthetic SAMPLE of dogs-vs-cats: data → folds → 5-fold training → CV → submission.
demo: install
	$(PY) -m competition sample dogs-vs-cats --out inputs/sample/dogs-vs-cats --force
	$(PY) -m competition folds dogs-vs-cats --data inputs/sample/dogs-vs-cats --out folds/sample-dogs-vs-cats.csv
	rm -rf runs/dogs-vs-cats/sample
	$(LAUNCH) train.py --config configs/dogs-vs-cats/sample.yaml
	$(LAUNCH) -m competition predict dogs-vs-cats --data inputs/sample/dogs-vs-cats --exps sample --tta hflip

# Leaderboard recipes (configs/<competition>/leaderboard.yaml): raw data → folds → train → validated submission,
# each in under an hour on 2 CPU cores. DATA defaults to ../shared/data/<competition>; ARGS adds overrides.
# A killed run continues where it stopped when the target is run again (trainer.resume=true).
LB_DATA = $(if $(filter command line environment,$(origin DATA)),$(DATA),../shared/data/$(1))
LB_FOLDS_cifar-10 := 0
LB_FOLDS_dogs-vs-cats :=
# The dogs-vs-cats recipe fine-tunes a ResNet-9 that first learns CIFAR-10's 10 classes from its 50,000
# labelled images (configs/cifar-10/pretrain-resnet9.yaml), found here:
CIFAR_DATA ?= ../shared/data/cifar-10
PRETRAINED := runs/cifar-10/pretrain-resnet9/fold_all/best.safetensors
LB_NEEDS_dogs-vs-cats := $(PRETRAINED)

leaderboard-cifar-10 leaderboard-dogs-vs-cats: leaderboard-%: install
	@echo "== $* leaderboard recipe: data $(call LB_DATA,$*), started $$(date '+%F %T')"
	$(if $(LB_NEEDS_$*),$(MAKE) --no-print-directory $(LB_NEEDS_$*))
	$(MAKE) --no-print-directory folds COMPETITION=$* DATA=$(call LB_DATA,$*)
	$(MAKE) --no-print-directory train COMPETITION=$* DATA=$(call LB_DATA,$*) EXP=leaderboard FOLDS="$(LB_FOLDS_$*)" ARGS="trainer.resume=true $(ARGS)"
	$(MAKE) --no-print-directory predict COMPETITION=$* DATA=$(call LB_DATA,$*) EXPS=leaderboard TTA=hflip
	@echo "== $* leaderboard recipe finished $$(date '+%F %T'): submissions/$*/leaderboard-tta.csv"

# ResNet-9 pretrained on all of CIFAR-10 (no validation fold), the starting point of the dogs-vs-cats recipe.
$(PRETRAINED): | install
	@echo "== pretraining ResNet-9 on CIFAR-10 ($(CIFAR_DATA)), started $$(date '+%F %T')"
	$(MAKE) --no-print-directory folds COMPETITION=cifar-10 DATA=$(CIFAR_DATA)
	$(MAKE) --no-print-directory train COMPETITION=cifar-10 DATA=$(CIFAR_DATA) EXP=pretrain-resnet9 ARGS="trainer.resume=true"

clean:
	rm -rf runs submissions/*/ folds/*.csv .cache
