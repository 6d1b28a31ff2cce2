"""Slow end-to-end checks: multi-process evaluation and exact resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hih_lightning.train import run

pytestmark = pytest.mark.slow


def _hih_train(tmp_path: Path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "hih_lightning.train", "train=false", "test=true",
           "data.test_size=7", "data.val_size=0", "data.train_size=0", "data.eval_batch_size=1",
           "data.num_workers=0", "logger=csv", "callbacks.progress_bar=null",
           f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={out}", *overrides]
    # One thread and one face per batch: each face's forward pass is then bitwise the same in
    # both runs, so an untrained net's near-tied argmaxes cannot differ by rounding.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())["metrics"]


def test_ddp_sim_evaluation_equals_one_process(tmp_path):
    """7 test faces over 2 processes: padding would count one face twice and move the NME."""
    single = _hih_train(tmp_path, "single", "trainer=cpu")
    double = _hih_train(tmp_path, "ddp", "trainer=ddp_sim")
    assert single["test/nme"] == pytest.approx(double["test/nme"], abs=1e-7)
    assert single["test/auc"] == pytest.approx(double["test/auc"], abs=1e-7)


def test_resumed_run_ends_like_an_uninterrupted_one(compose_cfg, tmp_path):
    runs = tmp_path / "logs" / "train" / "runs"
    latest = "callbacks.model_checkpoint.monitor=null"  # test the final weights in every run
    straight = run(compose_cfg("trainer.max_epochs=2", latest,
                               f"paths.output_dir={runs / 'straight'}"))
    # The "killed" run stops after its first epoch; the resumed one picks up its last.ckpt.
    run(compose_cfg("trainer.max_epochs=1", "test=false", latest,
                    f"paths.output_dir={runs / 'killed'}"))
    resumed = run(compose_cfg("trainer.max_epochs=2", "ckpt_path=last", latest,
                              f"paths.output_dir={runs / 'resumed'}"))
    for key in ("test/nme", "test/fr", "test/auc", "val/nme"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5), key
