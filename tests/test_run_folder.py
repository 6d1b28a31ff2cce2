"""A run folder is the unit: resume and evaluation compose the run's own saved config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hih_lightning import eval as hih_eval
from hih_lightning.config import CONFIG_DIR, ConfigError
from hih_lightning.run_folder import (
    RESUMES,
    SAVED_CONFIG,
    SAVED_OVERRIDES,
    discard_job_dir,
    is_complete,
    record_resume,
    run_checkpoint,
    with_run_config,
)
from hih_lightning.train import run

# the non-default run: another codec, learning rate and budget than conf/train.yaml's
RUN_OVERRIDES = ("model/codec=dark", "model.optimizer.lr=0.0003", "trainer.max_epochs=1",
                 "callbacks.model_checkpoint.monitor=null")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished non-default run folder as hih-train leaves it (.hydra/config.yaml and
    overrides.yaml included); trained once, copied by :func:`finished_run`."""
    from hydra import compose, initialize_config_dir

    root = tmp_path_factory.mktemp("trained")
    run_dir = root / "logs" / "train" / "runs" / "out"
    overrides = [f"paths.log_dir={root / 'logs'}", f"paths.output_dir={run_dir}",
                 "logger=csv", "debug=tiny", *RUN_OVERRIDES]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    run(cfg)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / SAVED_CONFIG)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / SAVED_OVERRIDES)
    return run_dir


@pytest.fixture
def finished_run(trained_run, tmp_path):
    """A fresh copy of :func:`trained_run` under this test's ``logs/train/runs/``."""
    run_dir = tmp_path / "logs" / "train" / "runs" / "out"
    shutil.copytree(trained_run, run_dir)
    return run_dir


def _default_cfg(tmp_path, *overrides, config_name="train"):
    """The config a user gets from the command line alone (defaults + ``overrides``)."""
    from hydra import compose, initialize_config_dir

    base = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.output_dir={tmp_path / 'new'}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=base + list(overrides))


def test_resume_of_a_finished_run_keeps_its_config_and_has_nothing_to_do(
        tmp_path, finished_run):
    cfg = _default_cfg(tmp_path, "ckpt_path=last")
    assert cfg.trainer.max_epochs != 1 and cfg.model.optimizer.lr != 0.0003  # the defaults
    merged = with_run_config(cfg, ["ckpt_path=last"], task="train")
    assert merged.trainer.max_epochs == 1
    assert merged.model.optimizer.lr == 0.0003
    assert merged.model.codec._target_.endswith("DARKCodec")
    assert Path(merged.paths.output_dir) == finished_run  # continues in its own folder
    assert Path(merged.ckpt_path) == finished_run / "checkpoints" / "last.ckpt"
    assert is_complete(merged)


def test_resume_with_a_longer_budget_continues_in_the_run_folder(tmp_path,
                                                                 finished_run):
    overrides = ["ckpt_path=last", "trainer.max_epochs=2"]
    merged = with_run_config(_default_cfg(tmp_path, *overrides), overrides,
                             task="train")
    assert merged.trainer.max_epochs == 2 and merged.model.optimizer.lr == 0.0003
    assert not is_complete(merged)
    run(merged)
    state = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 8  # 2 epochs x 4 batches
    # the first epoch's log is kept; the resumed one logs beside it
    assert (finished_run / "csv" / "metrics.csv").is_file()
    assert (finished_run / "csv" / "resume1" / "metrics.csv").is_file()
    assert not (tmp_path / "new").exists()


def test_a_group_override_applies_on_top_of_the_run(tmp_path, finished_run):
    """logger=none is a config group: it must replace the run's logger, nothing else."""
    overrides = ["ckpt_path=last", "logger=none", "seed=7"]
    merged = with_run_config(_default_cfg(tmp_path, *overrides), overrides,
                             task="train")
    assert not merged.get("logger")
    assert merged.seed == 7 and merged.model.optimizer.lr == 0.0003
    assert merged.model.codec._target_.endswith("DARKCodec")


@pytest.mark.parametrize("override", ["model/codec=hih", "model=hih_t"])
def test_an_override_that_changes_the_network_is_refused(tmp_path, finished_run,
                                                         override):
    overrides = ["ckpt_path=last", override]
    cfg = _default_cfg(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=rf"{override} changes the network's shape .*"
                                          rf"{finished_run.name}"):
        with_run_config(cfg, overrides, task="train")


def test_eval_of_a_non_default_codec_run_needs_no_overrides(tmp_path,
                                                            finished_run):
    """The run's own test NME comes back from hih-eval given only the run folder."""
    trained = json.loads((finished_run / "metrics.json").read_text())["metrics"]
    overrides = [f"run_dir={finished_run}"]
    cfg = _default_cfg(tmp_path, *overrides, "logger=none", config_name="eval")
    merged = with_run_config(cfg, overrides, task="eval")
    assert merged.model.codec._target_.endswith("DARKCodec")
    assert merged.data.test_size == 8  # debug=tiny's split, not the default's
    assert Path(merged.ckpt_path) == run_checkpoint(finished_run)
    evaluated = hih_eval.run(merged)
    for key in ("test/nme", "test/fr", "test/auc"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


def test_an_override_of_a_key_newer_than_the_run_reaches_it(tmp_path, finished_run):
    """A key added to the project after the run (absent from its saved config) and asked for
    at its new default must still be set, not dropped because the default already has it."""
    saved = OmegaConf.load(finished_run / SAVED_CONFIG)
    default = saved.model.codec.sigma
    del saved.model.codec["sigma"]
    OmegaConf.save(saved, finished_run / SAVED_CONFIG)
    overrides = [f"run_dir={finished_run}", f"model.codec.sigma={default}"]
    cfg = _default_cfg(tmp_path, *overrides, "logger=none", config_name="eval")
    merged = with_run_config(cfg, overrides, task="eval")
    assert merged.model.codec.sigma == default
    untouched = with_run_config(cfg, [f"run_dir={finished_run}"], task="eval")
    assert "sigma" not in untouched.model.codec


def test_eval_data_overrides_apply_on_top_of_the_run(tmp_path, finished_run):
    overrides = ["ckpt_path=last", "data.test_size=5", "trainer.accelerator=cpu"]
    cfg = _default_cfg(tmp_path, *overrides, config_name="eval")
    merged = with_run_config(cfg, overrides, task="eval")
    assert merged.data.test_size == 5 and merged.data.train_size == 16
    assert merged.task_name == "eval" and Path(merged.paths.output_dir) == tmp_path / "new"


def test_a_checkpoint_without_a_run_folder_uses_the_command_line_config(tmp_path,
                                                                        finished_run):
    lone = tmp_path / "lone.ckpt"
    lone.write_bytes((finished_run / "checkpoints" / "last.ckpt").read_bytes())
    cfg = _default_cfg(tmp_path, f"ckpt_path={lone}")
    merged = with_run_config(cfg, [f"ckpt_path={lone}"], task="train")
    assert merged.model.codec._target_ == cfg.model.codec._target_
    assert merged.ckpt_path == str(lone)


# Runs record_resume with every write under .hydra/ killed (SIGKILL) halfway through its bytes
_KILLED_RECORD = """
import builtins, io, os, signal, sys
from omegaconf import OmegaConf
from hih_lightning.run_folder import record_resume

real_open = builtins.open

class DiesHalfway:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

def dying_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    return DiesHalfway(f) if "w" in mode and ".hydra" in str(file) else f

builtins.open = io.open = dying_open
record_resume(OmegaConf.load(sys.argv[1]), ["trainer.max_epochs=3"])
"""


def test_a_kill_while_recording_a_resume_leaves_the_run_config_whole(tmp_path):
    run_dir = tmp_path / "run"
    saved = OmegaConf.create({"paths": {"output_dir": str(run_dir)}, "ckpt_path": None,
                              "trainer": {"max_epochs": 2}, "model": {"lr": 0.001}})
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(saved, run_dir / SAVED_CONFIG)
    resumed = OmegaConf.merge(saved, {"trainer": {"max_epochs": 3}, "ckpt_path": "last.ckpt"})
    OmegaConf.save(resumed, tmp_path / "resumed.yaml")
    proc = subprocess.run([sys.executable, "-c", _KILLED_RECORD, str(tmp_path / "resumed.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert OmegaConf.load(run_dir / SAVED_CONFIG) == saved
    assert not (run_dir / RESUMES).exists()
    # done again without the kill: both files written whole, the killed write's leftovers gone
    record_resume(resumed, ["trainer.max_epochs=3"])
    assert OmegaConf.load(run_dir / SAVED_CONFIG) == resumed
    assert len(OmegaConf.load(run_dir / RESUMES)) == 1
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml",
                                                                       "resumes.yaml"]


def test_discard_keeps_folders_with_results(tmp_path):
    empty = tmp_path / "empty"
    (empty / ".hydra").mkdir(parents=True)
    (empty / "train.log").write_text("started\n")
    kept = tmp_path / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert discard_job_dir(empty) and not empty.exists()
    assert not discard_job_dir(kept) and kept.exists()


# -- every value of every config group starts ------------------------------------------------
def _group_values() -> list[tuple[str, str]]:
    out = []
    for group in ("model", "model/codec", "logger", "callbacks", "trainer", "debug"):
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            out.append((group, path.stem))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("group", "value"), _group_values())
def test_every_group_value_starts(compose_cfg, group, value):
    if group == "trainer" and value in ("gpu", "ddp") and not torch.cuda.is_available():
        pytest.skip(f"trainer={value} needs a GPU")
    if (group, value) == ("trainer", "ddp_sim"):
        pytest.skip("started from the command line by test_train_slow (DDP relaunches argv)")
    # every architecture at the smallest input its decimal head allows (64 px, k = 4); a few
    # faces; a fixed W&B run name (the default one reads the Hydra job, absent here)
    extra = {"model": ["model.net.input_size=64", "model.net.decimal_size=4"],
             "logger": ["logger.wandb.name=test"] if value == "wandb" else []}.get(group, [])
    debug = [] if group == "debug" else ["debug=fast_dev_run"]
    cfg = compose_cfg(f"{group}={value}", *debug, "data.train_size=4",
                      "data.val_size=4", "data.test_size=4", "data.batch_size=2", *extra)
    metrics = run(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/nme"]))


# -- the command line, end to end -------------------------------------------------------------
def _cli(tool: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"hih_lightning.{tool}", f"paths.log_dir={tmp_path / 'logs'}",
           *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_cli_resume_eval_and_bad_override(tmp_path):
    runs = tmp_path / "logs" / "train" / "runs"
    first = _cli("train", tmp_path, "debug=tiny", "logger=none", *RUN_OVERRIDES)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns

    again = _cli("train", tmp_path, "ckpt_path=last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is complete" in again.stdout + again.stderr
    assert list(runs.iterdir()) == [run_dir] and last.stat().st_mtime_ns == before

    evaluated = _cli("eval", tmp_path, "ckpt_path=last")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (eval_dir,) = (tmp_path / "logs" / "eval" / "runs").iterdir()
    saved = OmegaConf.load(eval_dir / SAVED_CONFIG)
    assert saved.model.codec._target_.endswith("DARKCodec")
    assert "DARK decoding" in (eval_dir / "metrics.md").read_text().split("\n")[0]

    bad = _cli("train", tmp_path, "+model.net.nonsense=1")
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, bad.stderr  # one message, no traceback
    assert errors[0].startswith("hih-train: error: config key 'model.net.nonsense'")
    assert "Traceback" not in bad.stderr + bad.stdout
    assert list(runs.iterdir()) == [run_dir]  # the failed start left no folder
