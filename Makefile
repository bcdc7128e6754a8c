# make demo: set up .venv if missing and run the embedded default.
# make test: set up .venv with the dev extras and run ruff and pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are installed first so that pip can take a local CPU/CUDA wheel;
# override e.g. TORCH_SPEC='torch==2.5.1 torchvision==0.20.1' for another platform.
TORCH_SPEC ?= "torch>=2.4" "torchvision>=0.19"

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/advtransfer demo --out runs/digits-distribution

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
