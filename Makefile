# make demo: set up .venv with what the demo needs (no dev extras) and run the embedded default.
# make test: add the dev extras to .venv, run ruff and the fast tier of the tests (4 min on 2 cores).
# make test-all: make test, then the second tier (long end-to-end runs, the README's numbers).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are installed first so that pip can take a local CPU/CUDA wheel. Without a
# GPU, the CPU wheels are far smaller than the default CUDA ones:
#   make demo TORCH_SPEC='torch torchvision --index-url https://download.pytorch.org/whl/cpu'
# or pin versions for another platform, e.g. TORCH_SPEC='torch==2.5.1 torchvision==0.20.1'.
TORCH_SPEC ?= "torch>=2.4" "torchvision>=0.19"
# pytest-xdist workers: one per core ("auto"); 0 runs the tests in this process.
WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(WORKERS)

.PHONY: demo test test-all lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e .
	touch $@

# one resolution for torch, the package and its dev extras (a fresh `make test` pays it once)
$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC) -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/advtransfer demo --out runs/digits-distribution

lint: install-dev
	$(BIN)/ruff check src tests benchmarks tools

# the fast tier: each worker takes one contiguous half of the tests (so a module's fixtures are
# built once, but for the module at the boundary) and steals the other's last tests when done
test: install-dev lint
	$(PYTEST) --dist worksteal

# the second tier, one test per long run (tests/test_readme_numbers.py: one per README table)
test-all: test
	$(PYTEST) --dist load -m slow

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
