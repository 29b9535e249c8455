# make venv   create .venv and install the package (editable) with its test and experiment extras
# make demo   a few test episodes of the shipped trained agent, on its own core (agents.shipped.ENV_KWARGS); saves their glimpse trails to runs/demo/
# make test   ruff (lint + format check), then the whole test suite, what CI runs (several minutes on 2 cores)
# make test-fast  ruff, then the suite without the slow end-to-end runs (pytest -m "not slow")
# make train  train the best recipe in about 15 minutes (--preset best --budget-seconds 840; ARGS= passes options)
# make bench  env throughput on one torch thread (pass options with ARGS="--seconds 1 --num-envs 64 1024")

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# Without an NVIDIA GPU (no nvidia-smi) torch comes from PyTorch's CPU-only wheel index, which leaves
# out the CUDA libraries; where that index cannot be reached, pip falls back to its configured indexes.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SPEC := torch>=2.2,<=2.14.1

.PHONY: venv demo test test-fast train bench

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install '$(TORCH_SPEC)' --index-url $(TORCH_CPU_INDEX) --timeout 15 --retries 1 \
	  || echo "make venv: $(TORCH_CPU_INDEX) not reachable; torch comes from pip's configured indexes"; \
	fi
	$(BIN)/python -m pip install -e '.[test,experiments]'
	touch $(STAMP)

demo: venv
	$(BIN)/python train/demo.py $(ARGS)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not slow"

train: venv
	$(BIN)/python train/differentiable.py --preset best --budget-seconds 840 --out runs/best $(ARGS)

bench: venv
	$(BIN)/python benchmarks/env_throughput.py --torch-threads 1 $(ARGS)
