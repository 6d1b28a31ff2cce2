"""A killed run resumes to exactly the run it would have been (issue 26).

The end-to-end checks run ``hih-train`` as a user does, on the main job's recipe at a tiny
size (2 loader workers, as in ``experiment=synthetic_hih``: the loader bug below needs
workers), and compare the final checkpoint of the resumed run with the uninterrupted run's
bit for bit: weights, optimizer and scheduler state. All runs use one thread (bitwise
equality holds for one machine and one thread count).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from hih_lightning.checkpoints import load_checkpoint
from hih_lightning.data.sampling import EpochKeySampler
from hih_lightning.resume import AtomicCheckpointIO, LastCheckpoint, StepSeed
from hih_lightning.train import build, run

TESTS = Path(__file__).resolve().parent
# 3 batches of 16 an epoch, 3 epochs; the learning rate drops before the last epoch, so a
# resume that misplaced the scheduler would show too
RECIPE = ("experiment=synthetic_hih", "data.train_size=48", "data.val_size=16",
          "data.test_size=16", "model.scheduler.milestones=[2]", "seed=7", "logger=csv",
          "callbacks.progress_bar=null", "callbacks.model_summary=null",
          "+callbacks.kill._target_=sigkill.KillAt")
NO_MONITOR = "callbacks.model_checkpoint.monitor=null"


def hih_train(logs: Path, *overrides: str, kill_at: str | None = None,
              env: dict[str, str] | None = None) -> int:
    """Run ``hih-train`` in a process of its own (``env`` added to its environment); returns
    its exit status."""
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("HIH_KILL", "SLURM_"))},
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS),
                                                       os.environ.get("PYTHONPATH")])),
           **(env or {})}
    if kill_at is not None:
        env["HIH_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "hih_lightning.train", f"paths.log_dir={logs}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if kill_at is None:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode


def start(logs: Path, run_dir: Path, *overrides: str, kill_at: str | None = None,
          env: dict[str, str] | None = None) -> int:
    return hih_train(logs, *RECIPE, f"hydra.run.dir={run_dir}", *overrides, kill_at=kill_at,
                     env=env)


def resume(logs: Path, run_dir: Path) -> None:
    hih_train(logs, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
              "trainer.max_epochs=3", "test=true")


def assert_same_training_state(ran: Path, reference: Path) -> None:
    """The two runs' last.ckpt hold the same epoch, step, weights, optimizer and scheduler
    state, bit for bit."""
    a = load_checkpoint(ran / "checkpoints" / "last.ckpt")
    b = load_checkpoint(reference / "checkpoints" / "last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k],
                                                            b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    assert_equal_nested(a["optimizer_states"], b["optimizer_states"])
    assert a["lr_schedulers"] == b["lr_schedulers"]


def assert_equal_nested(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal_nested(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal_nested(x, y)
    else:
        assert a == b


def final_test_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


# -- the sampler's place in the data ----------------------------------------------------------
def test_a_resumed_sampler_continues_where_the_killed_one_stopped():
    straight = EpochKeySampler(10, shuffle=True, seed=3)
    straight.set_epoch(2)
    keys = list(straight)
    resumed = EpochKeySampler(10, shuffle=True, seed=3)
    resumed.resume_at(2, 4)
    assert list(resumed) == keys[4:]
    assert len(resumed) == 10  # Lightning counts the skipped batches itself
    resumed.set_epoch(2)  # Lightning sets the same epoch again before iterating: kept
    assert list(resumed) == keys[4:]
    resumed.set_epoch(3)
    straight.set_epoch(3)
    assert list(resumed) == list(straight)


def test_a_loader_with_workers_made_before_set_epoch_draws_the_resumed_epoch():
    """Lightning makes the resumed run's first iterator before it calls set_epoch; a loader
    with workers draws its first indices then (Lightning issue 21938)."""
    sampler = EpochKeySampler(64, shuffle=True, seed=3)
    sampler.resume_at(5, 16)
    loader = torch.utils.data.DataLoader(range(10**4), batch_size=8, sampler=sampler,
                                         num_workers=2)
    batches = iter(loader)
    sampler.set_epoch(5)
    expected = EpochKeySampler(64, shuffle=True, seed=3)
    expected.set_epoch(5)
    assert torch.cat(list(batches)).tolist() == list(expected)[16:]


# -- end to end: the uninterrupted run and its interrupted twins --------------------------------
@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("straight")
    run_dir = logs / "run"
    start(logs, run_dir, "trainer.max_epochs=3")
    return run_dir


@pytest.mark.slow
def test_resume_after_a_clean_stop_is_the_uninterrupted_run(straight, tmp_path):
    run_dir = tmp_path / "run"
    start(tmp_path, run_dir, "trainer.max_epochs=2", "test=false")
    resume(tmp_path, run_dir)
    assert_same_training_state(run_dir, straight)
    assert final_test_metrics(run_dir) == final_test_metrics(straight)


@pytest.mark.slow
@pytest.mark.parametrize("callbacks", [(), (NO_MONITOR,)], ids=["default", "monitor_null"])
def test_resume_after_a_sigkill_is_the_uninterrupted_run(straight, tmp_path, callbacks):
    """Killed in the third epoch, after its first batch: the second epoch's checkpoint is the
    latest, and the resumed run redoes that batch."""
    run_dir = tmp_path / "run"
    status = start(tmp_path, run_dir, "trainer.max_epochs=3", *callbacks, kill_at="2,1")
    assert status == -9, f"the run was not killed (exit status {status})"
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1
    resume(tmp_path, run_dir)
    assert_same_training_state(run_dir, straight)
    if not callbacks:  # both tested their best checkpoint, chosen from the same val/nme
        assert final_test_metrics(run_dir) == final_test_metrics(straight)


@pytest.mark.slow
def test_resume_after_a_sigkill_mid_epoch_is_the_uninterrupted_run(straight, tmp_path):
    """last.ckpt every 2 steps: killed in the second epoch after its second batch, the run
    resumes after that epoch's first batch (global step 4), trains the epoch's last two, then
    steps the learning rate down at the epoch's end as the uninterrupted run did."""
    run_dir = tmp_path / "run"
    status = start(tmp_path, run_dir, "trainer.max_epochs=3",
                   "callbacks.last_checkpoint.every_n_train_steps=2", kill_at="1,2")
    assert status == -9, f"the run was not killed (exit status {status})"
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    resume(tmp_path, run_dir)
    assert_same_training_state(run_dir, straight)
    assert final_test_metrics(run_dir) == final_test_metrics(straight)


def test_last_checkpoint_is_due_by_steps_or_minutes_but_not_on_an_epochs_last_batch(
        monkeypatch, tmp_path):
    clock = [0.0]
    monkeypatch.setattr("hih_lightning.resume.time.monotonic", lambda: clock[0])
    saved = []
    trainer = SimpleNamespace(
        sanity_checking=False, fast_dev_run=False, state=SimpleNamespace(fn="fit"),
        num_training_batches=10, global_step=0, strategy=SimpleNamespace(broadcast=lambda x: x),
        save_checkpoint=lambda path: saved.append((trainer.global_step, path)))
    callback = LastCheckpoint(tmp_path, every_n_train_steps=4, every_n_minutes=10)
    callback.on_train_start(trainer, None)

    def batch(step: int, minutes: float, batch_idx: int = 0) -> None:
        trainer.global_step, clock[0] = step, 60 * minutes
        callback.on_train_batch_end(trainer, None, None, None, batch_idx)

    batch(3, 9.9)
    batch(4, 9.9)          # 4 steps
    batch(5, 19.8)         # not yet 10 minutes since the last save
    batch(6, 20.0)         # 10 minutes
    batch(8, 21.0, 9)      # the epoch's last batch: the epoch end saves
    callback.on_train_epoch_end(trainer, None)
    assert saved == [(4, tmp_path / "last.ckpt"), (6, tmp_path / "last.ckpt"),
                     (8, tmp_path / "last.ckpt")]


def test_the_default_config_loses_at_most_ten_minutes_of_training(compose_cfg):
    node = compose_cfg(tiny=False).callbacks.last_checkpoint
    assert node.every_n_minutes <= 10


@pytest.mark.slow
def test_slurms_warning_signal_saves_requeues_and_the_requeued_job_resumes(straight, tmp_path):
    """SIGUSR2 in the second epoch's second step of a (pretend) SLURM job: last.ckpt is saved at
    the step's end and ``scontrol requeue`` is called; the same command run again as the
    requeued job (SLURM_RESTART_COUNT=1) continues the run from there by itself."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run_dir = tmp_path / "run"
    status = start(tmp_path, run_dir, "trainer.max_epochs=3", kill_at="1,1",
                   env={**slurm, "HIH_KILL_SIGNAL": "SIGUSR2"})
    assert status == 0
    assert calls.read_text().split() == ["requeue", "4242"]
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 5
    start(tmp_path, run_dir, "trainer.max_epochs=3", env={**slurm, "SLURM_RESTART_COUNT": "1"})
    assert_same_training_state(run_dir, straight)
    assert final_test_metrics(run_dir) == final_test_metrics(straight)
    # resumed, not trained again from the start (which would end equal too)
    assert len(OmegaConf.load(run_dir / ".hydra" / "resumes.yaml")) == 1
    assert (run_dir / "csv" / "resume1" / "metrics.csv").is_file()


# -- a kill during a checkpoint's write -----------------------------------------------------------
_KILLED_WRITER = """
import os, signal, sys, threading, time
import torch
from hih_lightning.resume import AtomicCheckpointIO

folder = sys.argv[1]

def kill_once_writing():  # SIGKILL as soon as any file there holds a megabyte of the new one
    while True:
        if any(e.stat().st_size > 2**20 for e in os.scandir(folder) if e.is_file()):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.0005)

threading.Thread(target=kill_once_writing, daemon=True).start()
big = {"state_dict": {"w": torch.arange(2**25, dtype=torch.float32)}}  # 128 MiB
AtomicCheckpointIO().save_checkpoint(big, os.path.join(folder, "last.ckpt"))
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 4}, last)
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed mid-write, not finished
    assert load_checkpoint(last)["epoch"] == 4
    assert [p.name for p in folder.iterdir() if p != last], "no partial file was written"
    # the next save replaces last.ckpt and removes what the killed writer left
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 5}, last)
    assert load_checkpoint(last)["epoch"] == 5
    assert list(folder.iterdir()) == [last]


def test_hih_train_writes_checkpoints_atomically(compose_cfg):
    _, _, trainer = build(compose_cfg())
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# -- the global RNG ---------------------------------------------------------------------------
def test_step_seed_makes_a_steps_draws_independent_of_earlier_ones():
    trainer = SimpleNamespace(global_rank=0, global_step=5)
    seed = StepSeed(7)
    seed.on_train_batch_start(trainer, None, None, 0)
    first = torch.rand(4)
    torch.rand(100)  # what a fresh process, a loader's seed draw or a validation would do
    seed.on_train_batch_start(trainer, None, None, 0)
    assert torch.equal(torch.rand(4), first)
    trainer.global_step = 6
    seed.on_train_batch_start(trainer, None, None, 0)
    assert not torch.equal(torch.rand(4), first)


@pytest.mark.slow
def test_a_codec_drawing_from_the_global_rng_resumes_exactly(compose_cfg, tmp_path):
    """Randomized rounding draws its targets from the global torch RNG, which a resumed
    process reaches by another path than the uninterrupted one (in process, no workers)."""
    runs = tmp_path / "logs" / "train" / "runs"
    common = ("model/codec=randomized_rounding", "test=false")
    run(compose_cfg("trainer.max_epochs=2", *common, f"paths.output_dir={runs / 'straight'}"))
    run(compose_cfg("trainer.max_epochs=1", *common, f"paths.output_dir={runs / 'killed'}"))
    run(compose_cfg("trainer.max_epochs=2", *common, f"paths.output_dir={runs / 'killed'}",
                    f"ckpt_path={runs / 'killed' / 'checkpoints' / 'last.ckpt'}"))
    assert_same_training_state(runs / "killed", runs / "straight")


# -- a moved run folder, resumed twice --------------------------------------------------------
@pytest.mark.slow
def test_a_moved_run_resumes_twice_keeping_its_best_checkpoint_and_logs(tmp_path):
    """Lightning would keep the old folder's best_model_path and forget the best score; the
    second resume logs to csv/resume2 beside resume1."""
    tiny = ("debug=tiny", "seed=3", "callbacks.lr_monitor=null")
    old, new = tmp_path / "old", tmp_path / "moved" / "run"
    hih_train(tmp_path, *tiny, "trainer.max_epochs=1", f"hydra.run.dir={old}")
    new.parent.mkdir()
    old.rename(new)
    for epochs in (2, 3):
        hih_train(tmp_path, f"ckpt_path={new / 'checkpoints' / 'last.ckpt'}",
                  f"trainer.max_epochs={epochs}")
    logs = {path.parent.name: path for path in (new / "csv").rglob("metrics.csv")}
    assert sorted(logs) == ["csv", "resume1", "resume2"]
    val = {}  # epoch -> val/nme, over the three logs
    for path in logs.values():
        for row in csv.DictReader(path.open()):
            if row.get("val/nme"):
                val[int(row["epoch"])] = float(row["val/nme"])
    assert sorted(val) == [0, 1, 2]
    best_epoch = min(val, key=val.get)
    state = next(v for k, v in load_checkpoint(new / "checkpoints" / "last.ckpt")["callbacks"]
                 .items() if k.startswith("ModelCheckpoint"))
    best = new / "checkpoints" / f"epoch_{best_epoch:03d}.ckpt"
    assert Path(state["best_model_path"]) == best
    assert float(state["best_model_score"]) == pytest.approx(val[best_epoch])
    assert sorted(p.name for p in (new / "checkpoints").glob("epoch_*.ckpt")) == [best.name]
    assert (new / "metrics.json").is_file()
    assert len(OmegaConf.load(new / ".hydra" / "resumes.yaml")) == 2
