#!/usr/bin/env bash
# Every ytf68 decoder x seed on one lent GPU in one call, P jobs at a time, then the results
# packed into $OUT (at most 8 files come back): <decoder>.pt (each seed's best weights in fp16,
# its saved config, metrics.json and CSV log) and runs.tgz (logs and reports).
#   OUT=/tmp/out P=8 DEADLINE=470 bash experiments/real_faces/device_grid.sh
# CPU check of the plumbing: TRAINER=cpu P=2 JOBS="argmax:42 hih:42" EXTRA="trainer.max_epochs=1
#   +trainer.limit_train_batches=2 +trainer.limit_val_batches=1" DATA=/data/ytf68 bash ...
set -u
OUT=${OUT:-/tmp/out}
DATA=${DATA:-.gpu/ytf68}
P=${P:-8}
DEADLINE=${DEADLINE:-470}  # seconds after start: jobs still running then are stopped
TRAINER=${TRAINER:-gpu}
EXTRA=${EXTRA:-}
JOBS=${JOBS:-"hih_local:42 offset_map:42 argmax:42 hih:42 hih_local:0 offset_map:0 argmax:0 hih:0 hih_local:1 offset_map:1 argmax:1 hih:1"}
RUNS=/tmp/ytf68_runs
START=$(date +%s)
mkdir -p "$OUT" "$RUNS"
if [ "${WHEELS:-1}" = 1 ] && [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  nproc; $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning',
lightning.__version__, 'cuda', torch.cuda.is_available())"; git log -1 --format='commit %H'
} | tee "$OUT/summary.txt"
# fail in seconds, not after the grid, when a package is missing there
$PY -c "import hih_lightning.train, albumentations, hydra" || exit 1

run_job() {  # decoder seed
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  [ "$left" -gt 30 ] || { echo "$1 seed $2: skipped (no time left)"; return; }
  OMP_NUM_THREADS=1 timeout "$left" $PY -m hih_lightning.train experiment="ytf68_$1" seed="$2" \
    data.root="$DATA" trainer="$TRAINER" logger=csv callbacks.progress_bar=null \
    data.num_workers=1 hydra.run.dir="$RUNS/$1_s$2" $EXTRA > "$RUNS/$1_s$2.log" 2>&1
  echo "$1 seed $2: rc=$? at $(( $(date +%s) - START )) s"
}
running=0
for job in $JOBS; do
  if [ "$running" -ge "$P" ]; then wait -n; running=$((running - 1)); fi
  run_job "${job%%:*}" "${job##*:}" | tee -a "$OUT/summary.txt" &
  running=$((running + 1))
done
wait
$PY - "$RUNS" "$OUT" <<'PYEOF' | tee -a "$OUT/summary.txt"
import json, sys, tarfile
from pathlib import Path
import torch
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
packs = {}
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    metrics = run / "metrics.json"
    ckpts = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    if not metrics.is_file() or not ckpts:
        print(f"{run.name}: unfinished"); continue
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    decoder = run.name.rsplit("_s", 1)[0]
    packs.setdefault(decoder, {})[run.name] = {
        "state_dict": half, "checkpoint": ckpts[-1].name,
        "config": (run / ".hydra" / "config.yaml").read_text(),
        "overrides": (run / ".hydra" / "overrides.yaml").read_text(),
        "metrics": metrics.read_text(),
        "csv": "".join(p.read_text() for p in sorted(run.glob("csv/**/metrics.csv")))}
    m = json.loads(metrics.read_text())["metrics"]
    print(run.name, {k: round(v, 4) for k, v in m.items() if k.startswith("test/") and isinstance(v, float)})
for decoder, pack in packs.items():
    torch.save(pack, out / f"{decoder}.pt")
with tarfile.open(out / "runs.tgz", "w:gz") as tar:
    for p in runs.rglob("*"):
        if p.is_file() and p.suffix in {".log", ".md", ".json", ".yaml", ".csv", ".png"}:
            tar.add(p, arcname=str(p.relative_to(runs)))
PYEOF
echo "grid and packing: $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
# the train-speed benchmark on this GPU with what time is left (BENCH_END: seconds after start)
left=$(( ${BENCH_END:-560} - ($(date +%s) - START) ))
if [ "$TRAINER" = gpu ] && [ "$left" -gt 60 ]; then
  timeout "$left" $PY benchmarks/bench_train.py --device cuda --budget $((left - 45)) \
    > "$OUT/bench_train_cuda.md" 2>&1
  echo "bench_train: rc=$? at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
fi
