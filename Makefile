# make demo: set up .venv with what the demo needs (no dev extras) and run the embedded default.
# make test: add the dev extras to .venv and run ruff and pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are installed first so that pip can take a local CPU/CUDA wheel. Without a
# GPU, the CPU wheels are far smaller than the default CUDA ones:
#   make demo TORCH_SPEC='torch torchvision --index-url https://download.pytorch.org/whl/cpu'
# or pin versions for another platform, e.g. TORCH_SPEC='torch==2.5.1 torchvision==0.20.1'.
TORCH_SPEC ?= "torch>=2.4" "torchvision>=0.19"

.PHONY: demo test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/advtransfer demo --out runs/digits-distribution

lint: install-dev
	$(BIN)/ruff check src tests benchmarks tools

test: install-dev lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
