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

# -- Reproduce the paper on an official benchmark --------------------------------------------
#   make reproduce-wflw DATA_DIR=/data   (/data holds WFLW/, 300W/, COFW/ as downloaded)
# Checks the layout first (fails in seconds, naming the missing file), then trains the
# published recipe (conf/experiment/<benchmark>_hih_$(VARIANT).yaml) on all visible GPUs with
# DDP, tests the best checkpoint, and writes experiments/<benchmark>/results.md from the run's
# metrics table (the paper's numbers beside ours). The per-GPU batch is GLOBAL_BATCH / GPUs,
# so the global batch stays the published 16.
VARIANT ?= b
GLOBAL_BATCH ?= 16
# more hih-train overrides, e.g. EXTRA="data.num_workers=16 data.cache_dir=/fast/cache"
EXTRA ?=
REPRO_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
WFLW_LAYOUT := WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt \
	WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt WFLW_images
300W_LAYOUT := afw helen/trainset lfpw/trainset helen/testset lfpw/testset ibug
COFW_LAYOUT := COFW_train_color.mat COFW_test_color.mat

# $(1) benchmark key, $(2) folder under DATA_DIR, $(3) files/folders that must exist there
define reproduce
	@test -n "$(DATA_DIR)" || { echo "reproduce-$(1): DATA_DIR=<folder holding $(2)/> is required" >&2; exit 2; }
	@for f in $(3); do test -e "$(DATA_DIR)/$(2)/$$f" || { echo "$(2): expected $(DATA_DIR)/$(2)/$$f (set DATA_DIR=<folder holding $(2)/>; layout: conf/data/$(1).yaml)" >&2; exit 2; }; done
	$(MAKE) install
	@set -e; run=logs/reproduce/$(1)_hih_$(VARIANT)/$(REPRO_STAMP); \
	gpus=$$($(BIN)/python -c "import torch; print(max(torch.cuda.device_count(), 1))"); \
	batch=$$(( $(GLOBAL_BATCH) / gpus )); test $$batch -ge 1; \
	cmd="$(BIN)/hih-train experiment=$(1)_hih_$(VARIANT) trainer=ddp paths.data_dir=$(DATA_DIR) data.batch_size=$$batch hydra.run.dir=$$run $(EXTRA)"; \
	echo "$$cmd"; $$cmd; \
	mkdir -p experiments/$(1); \
	{ echo "# $(2), hih_$(VARIANT): published recipe reproduced"; echo; \
	  echo "- command: \`make reproduce-$(1) DATA_DIR=$(DATA_DIR) VARIANT=$(VARIANT)\`"; \
	  echo "- runs: \`$$cmd\`"; \
	  echo "- commit: $$(git rev-parse --short HEAD 2>/dev/null || echo unknown), $$(date -u +%Y-%m-%dT%H:%MZ), $$gpus GPU(s) x batch $$batch"; \
	  echo "- run folder: $$run (metrics.json, ced.png, predictions.png, checkpoints)"; \
	  echo "- validation = test set (community practice), so the tested checkpoint is chosen on it"; \
	  echo; tail -n +2 $$run/metrics.md; } > experiments/$(1)/results.md; \
	echo "wrote experiments/$(1)/results.md"
endef

reproduce-wflw:
	$(call reproduce,wflw,WFLW,$(WFLW_LAYOUT))

reproduce-300w:
	$(call reproduce,300w,300W,$(300W_LAYOUT))

reproduce-cofw:
	$(call reproduce,cofw,COFW,$(COFW_LAYOUT))
