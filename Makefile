# hih-lightning: `make main` installs and runs the main job; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU build on the reference machine; set TORCH_SPEC="torch" (or a CUDA wheel) elsewhere.
TORCH_SPEC ?= torch==2.13.0
# Where that file lies: pip's find-links, from its config files or PIP_FIND_LINKS (uv reads
# no pip config, so they are passed on)
FIND_LINKS ?= $(sort $(shell $(PYTHON) -m pip config list 2>/dev/null \
	| sed -n "s/^[^=]*[.]find-links='\(.*\)'$$/\1/p"))
DATA_DIR ?=
SEEDS ?= 0,1,2
# make's commands keep Python's bytecode cache even where the shell sets
# PYTHONDONTWRITEBYTECODE=1 (the reference machine does): the first `make main` compiles
# only what training imports (about 14 s), instead of compiling all 190 MB of the venv at
# install (30-36 s) or every import at every start (12 s a command).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install main test test-fast lint bench quant reproduce-wflw reproduce-300w reproduce-cofw reproduce-ytf68 \
	ablations report

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@# uv resolves and unpacks in parallel, and the venv starts without pip (ensurepip alone
	@# takes 7 s); uv then puts pip into the venv, so that an activated venv's `pip` is its
	@# own. Nothing is compiled here: Python compiles what a command imports (see above).
	@# 18 s against pip's 88 s (experiments/README.md, "Install with uv").
	test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	test -x $(BIN)/uv || $(PYTHON) -m pip --python $(BIN)/python install -q uv
	$(BIN)/uv pip install -q --python $(BIN)/python \
		$(foreach f,$(FIND_LINKS),--find-links $(f)) "$(TORCH_SPEC)" -e ".[dev,export]" pip
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

# Quantization NME of every decoder on the real annotation files (../shared/data), no network.
# Writes under logs/quant/; `make quant UPDATE=1` rewrites the committed experiments/quantization.
UPDATE ?=
quant: install
	$(BIN)/hih-quant $(if $(UPDATE),paths.output_dir=experiments/quantization)

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
RUN_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
WFLW_LAYOUT := WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt \
	WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt WFLW_images
300W_LAYOUT := afw helen/trainset lfpw/trainset helen/testset lfpw/testset ibug
COFW_LAYOUT := COFW_train_color.mat COFW_test_color.mat

# $(1) benchmark key, $(2) folder under DATA_DIR, $(3) files/folders that must exist there
define reproduce
	@test -n "$(DATA_DIR)" || { echo "reproduce-$(1): DATA_DIR=<folder holding $(2)/> is required" >&2; exit 2; }
	@for f in $(3); do test -e "$(DATA_DIR)/$(2)/$$f" || { echo "$(2): expected $(DATA_DIR)/$(2)/$$f (set DATA_DIR=<folder holding $(2)/>; layout: conf/data/$(1).yaml)" >&2; exit 2; }; done
	$(MAKE) install
	@set -e; run=logs/reproduce/$(1)_hih_$(VARIANT)/$(RUN_STAMP); \
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

# -- Real faces: the YouTube Faces 68-point set (experiments/real_faces/README.md) -----------
#   make reproduce-ytf68 DATA_DIR=/data/ytf68   (holding training/, test/ and the two CSVs)
# Checks the layout, trains experiment=ytf68_$(YTF68_DECODER) on the people of the identity
# split's train part (about 48 min on 2 CPU cores), tests it on the held-out people, then puts
# dlib's 68-point landmarker beside it (hih-realfaces) when dlib is installed
# (pip install -e ".[baselines]"). Everything lands in logs/ytf68/<stamp>/.
YTF68_DECODER ?= hih_local
reproduce-ytf68: install
	@test -n "$(DATA_DIR)" || { echo "reproduce-ytf68: DATA_DIR=<folder holding training/, test/ and the CSVs> is required" >&2; exit 2; }
	@$(BIN)/python -m hih_lightning.data.benchmarks check ytf68 $(DATA_DIR) || exit 2
	@set -e; run=logs/ytf68/$(RUN_STAMP); \
	cmd="$(BIN)/hih-train experiment=ytf68_$(YTF68_DECODER) data.root=$(DATA_DIR) hydra.run.dir=$$run $(EXTRA)"; \
	echo "$$cmd"; $$cmd; \
	if $(BIN)/python -c "import dlib; from hih_lightning.analysis.real_faces import shape_predictor_path as p; p()" 2>/dev/null; then \
	  $(BIN)/hih-realfaces --root $(DATA_DIR) --runs $$run --out $$run/realfaces; \
	else echo "note: dlib not installed (pip install -e '.[baselines]'): no dlib comparison"; fi

# -- Ablations: Hydra multirun sweeps over one factor, conf/ablation/<name>.yaml --------------
#   make ablation-decimal_size                 k = 4/8/16 x SEEDS on the synthetic faces
#   make ablation-codec LAUNCHER=joblib EXTRA="hydra.launcher.n_jobs=2"   jobs in parallel
#   make ablation-stacks LAUNCHER=slurm EXTRA="experiment=wflw_hih_t trainer=gpu paths.data_dir=/data"
#   make ablation-codec EXTRA="experiment=synthetic_ablation_64"   the longer 64 px budget
#   make ablations                             every sweep, one after the other
# Each sweep writes logs/ablations/<name>/<stamp>/<job>/ and then its report (hih-report):
# report.md / report.csv / report.png, mean +- std over the seeds for each factor value.
# Default budget (conf/experiment/synthetic_ablation.yaml): ~2 min per job on 2 CPU cores.
# LAUNCHER: basic (one job after another), joblib (local processes), slurm (submitit).
ABLATIONS := decimal_size soft_label decimal_loss heatmap_sigma codec stacks local_decimal_size hih_window hih_local_weight offset_weight integral_weight offset_window simcc
ABLATION_TARGETS := $(addprefix ablation-,$(ABLATIONS))
LAUNCHER ?= basic
# joblib runs each job in a loky worker process, where DataLoader worker processes fail to
# start ("'Process' object has no attribute 'env'"): such jobs load in their own process.
LAUNCHER_EXTRA := $(if $(filter joblib,$(LAUNCHER)),data.num_workers=0)
.PHONY: $(ABLATION_TARGETS)

$(ABLATION_TARGETS): ablation-%: install
	@set -e; dir=logs/ablations/$*/$(RUN_STAMP); \
	cmd="$(BIN)/hih-train -m ablation=$* seed=$(SEEDS) hydra/launcher=$(LAUNCHER) hydra.sweep.dir=$$dir $(LAUNCHER_EXTRA) $(EXTRA)"; \
	echo "$$cmd"; $$cmd; \
	$(BIN)/hih-report $$dir

ablations: $(ABLATION_TARGETS)

# Re-collect a sweep (e.g. after more seeds or a partial run): make report SWEEP=logs/ablations/codec/<stamp>
# (default: the newest sweep under logs/ablations/)
SWEEP ?= $(shell ls -td logs/ablations/*/*/ 2>/dev/null | head -1)
report: install
	@test -n "$(SWEEP)" || { echo "report: no sweep under logs/ablations/; set SWEEP=<multirun dir>" >&2; exit 2; }
	$(BIN)/hih-report $(SWEEP)
