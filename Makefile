# cliplab: `make help` lists the targets. Every target sets up what it needs and is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cliplab-installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install data train test test-full lint format bench sweep sweep-small report clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# DeepSpeed's setup imports torch: build it against the torch just installed
	$(PY) -m pip install --quiet --no-build-isolation -e '.[deepspeed]'
	$(PY) -c "import torch, torchvision.ops, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

install: $(STAMP) ## Create the virtual environment with every dependency (once; reused afterwards)

data: $(STAMP) ## Fetch and build the default data set (the mix, over the emoji set) into the cache (once)
	$(PY) -m cliplab.data.mix

train: data ## Train + evaluate the default small CLIP on the CPU (ARGS="model=... trainer=..." to change)
	$(PY) src/train.py $(ARGS)

test: $(STAMP) ## Run the default test suite
	$(PY) -m pytest -q $(ARGS)

test-full: $(STAMP) ## Run every test, slow ones included (GPU tests skip without a GPU)
	$(PY) -m pytest -q -m "not gpu and not multigpu or gpu or multigpu" $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check src tests bench && $(VENV)/bin/ruff format --check src tests bench

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench && $(VENV)/bin/ruff format src tests bench

bench: $(STAMP) ## Benchmarks side by side with open_clip (prints tables; writes bench/results/)
	$(PY) -m bench $(ARGS)

clean: ## Remove run outputs (keeps the environment and the data cache)
	rm -rf logs outputs multirun wandb lightning_logs .pytest_cache

SWEEP ?= scaling_emoji_small
REPORT_DIR = $(if $(wildcard $(SWEEP)/.),$(SWEEP),logs/sweeps/$(SWEEP))

sweep: data ## Run a sweep from sweeps/<SWEEP>.yaml (resumable: finished jobs skip), e.g. make sweep SWEEP=scaling_emoji
	$(PY) -m cliplab.sweeps.launch $(SWEEP) $(ARGS)

sweep-small: data ## A real small scaling sweep on CPU (3 model sizes on emoji), then its report
	$(PY) -m cliplab.sweeps.launch scaling_emoji_small $(ARGS)
	$(PY) -m cliplab.sweeps.report logs/sweeps/scaling_emoji_small

report: $(STAMP) ## Report of a sweep (name or directory): table, scaling fit, plots -> <dir>/report/
	$(PY) -m cliplab.sweeps.report $(REPORT_DIR) $(ARGS)
