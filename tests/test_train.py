"""The training framework end to end through the real Hydra configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hih_lightning.config import CONFIG_DIR, ConfigError, validate_config
from hih_lightning.module import NonFiniteLossError
from hih_lightning.train import build, run

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}", tiny=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["codec"]["heatmap_size"] * 4 == resolved["model"]["net"]["input_size"]
    assert resolved["data"]["image_size"] == resolved["model"]["net"]["input_size"]
    assert resolved["model"]["net"]["num_landmarks"] == resolved["data"]["num_landmarks"]
    for logger in ("csv", "wandb", "tensorboard"):  # every key is a parameter of its target
        validate_config(compose_cfg(f"experiment={experiment}", f"logger={logger}", tiny=False))


def test_fast_dev_run_fit_validate_test(compose_cfg):
    cfg = compose_cfg("debug=fast_dev_run", "callbacks=none")
    metrics = run(cfg)
    assert {"test/nme", "test/fr", "test/auc", "test/pose/nme"} <= set(metrics)
    assert 0 < metrics["test/nme"] < 10
    # HIH's validation and test also score the decimal head (accuracy) and the integer-only
    # decode; the test values reach the run report that hih-report reads
    for stage in ("val", "test"):
        assert 0 <= metrics[f"{stage}/decimal_acc"] <= 1 and metrics[f"{stage}/nme_integer"] > 0


@pytest.mark.parametrize("codec", ["argmax", "quarter", "dark", "soft_argmax", "hih_mse",
                                   "fc_offset", "offset_map", "hih_local", "simcc",
                                   "randomized_rounding"])
def test_baselines_train_one_step(compose_cfg, codec):
    metrics = run(compose_cfg("debug=fast_dev_run", "callbacks=none", f"model/codec={codec}"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert metrics["test/nme"] > 0
    # only the codecs with a decimal head (HIH's) score it
    decimal_head = codec in ("hih_mse", "hih_local")
    assert ("val/decimal_acc" in metrics) == decimal_head
    assert ("test/nme_integer" in metrics) == decimal_head


def test_run_writes_report_files(compose_cfg, tmp_path):
    cfg = compose_cfg("trainer.max_epochs=1")
    run(cfg)
    out = Path(cfg.paths.output_dir)
    report = json.loads((out / "metrics.json").read_text())
    assert report["metrics"]["test/nme"] > 0
    table = (out / "metrics.md").read_text()
    assert "| full |" in table and "NME (%)" in table
    for name in ("ced.png", "predictions.png", "checkpoints/last.ckpt"):
        assert (out / name).stat().st_size > 0, name


def test_wrong_config_key_fails_at_start_naming_it(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="batch_sise"):
        compose_cfg("data.batch_sise=4")
    cfg = compose_cfg("model.net.variant=hih_x")
    with pytest.raises(ConfigError, match="model"):
        build(cfg)


@pytest.mark.parametrize(("override", "message"), [
    ("+model.loss.decimal_wieght=1", "'model.loss.decimal_wieght': .*LandmarkLoss has no "
                                     "parameter 'decimal_wieght'"),
    ("+trainer.max_epoch=3", "'trainer.max_epoch': .*Trainer has no parameter"),
    ("data.batch_size=abc", "'data.batch_size': 'abc' is not a valid value of type int"),
    ("model.loss.decimal_weight=true", "'model.loss.decimal_weight': True .* type float"),
    ("model.codec.soft_label=sharp", "'model.codec.soft_label': 'sharp' .* one of 'softmax'"),
    ("data.crop_protocol=foo", "'data.crop_protocol': 'foo' .* one of 'gt_box'"),
    ("model.net.head=vit", "'model.net.head': 'vit'"),
    ("model.net._target_=hih_lightning.nope", "'model.net._target_': cannot import"),
])
def test_bad_value_or_key_fails_before_anything_is_built(compose_cfg, override, message):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=message):
        run(cfg)


def test_nan_loss_stops_with_the_step_number(compose_cfg):
    cfg = compose_cfg("debug=fast_dev_run", "callbacks=none", "model.loss.heatmap_weight=nan",
                      "trainer.fast_dev_run=3")
    with pytest.raises(NonFiniteLossError, match=r"global step 0 \(epoch 0, batch 0\)"):
        run(cfg)


def test_resume_from_last_continues_epochs_and_optimizer(compose_cfg, tmp_path):
    first = compose_cfg("trainer.max_epochs=1", "test=false")
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["epoch"] == 0 and state["global_step"] == 4
    second = compose_cfg("trainer.max_epochs=2", "test=false", "ckpt_path=last",
                         f"paths.output_dir={tmp_path / 'logs' / 'train' / 'runs' / 'resumed'}")
    run(second)
    resumed = torch.load(Path(second.paths.output_dir) / "checkpoints" / "last.ckpt",
                         weights_only=False)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 8
    # Adam's step counter continued from the first run instead of restarting.
    steps = {float(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert steps == {8.0}
