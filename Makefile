# hih-lightning: `make main` installs and runs the main job; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU build on the reference machine; set TORCH_SPEC="torch" (or a CUDA wheel) elsewhere.
TORCH_SPEC ?= torch==2.13.0
DATA_DIR ?=
SEEDS ?= 0,1,2

.PHONY: install main test test-fast lint bench reproduce-wflw reproduce-300w reproduce-cofw

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# Train + test the CPU-size HIH on the embedded synthetic faces; prints the results table.
main: install
	$(BIN)/hih-train experiment=synthetic_hih

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks tools

bench: install
	$(BIN)/python benchmarks/bench_codecs.py
