"""The training framework end to end through the real Hydra configs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from hih_lightning.config import CONFIG_DIR, ConfigError, instantiate_node, validate_config
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
    # decode; the test values reach the run report that hih-report reads. fast_dev_run
    # scores one batch of each: the accuracy is a count of hits over faces x landmarks.
    scored = cfg.data.eval_batch_size * cfg.data.num_landmarks
    assert scored == 32 * 98
    for stage in ("val", "test"):
        hits = metrics[f"{stage}/decimal_acc"] * scored
        assert 0 <= hits <= scored and abs(hits - round(hits)) < 1e-3, (stage, hits)
        assert metrics[f"{stage}/nme_integer"] > 0


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


def _markdown_rows(text: str) -> list[dict[str, str]]:
    """The first markdown table of ``text`` as one {column: cell} dict per row."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= set("|-:")
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_run_writes_report_files(compose_cfg, tmp_path):
    cfg = compose_cfg("trainer.max_epochs=1")
    metrics = run(cfg)
    out = Path(cfg.paths.output_dir)
    report = json.loads((out / "metrics.json").read_text())
    results = report["metrics"]
    assert results["test/nme"] > 0
    # run()'s return holds the same values (logged as float32)
    assert results == pytest.approx({k: metrics[k] for k in results}, rel=1e-6)
    # the table prints metrics.json: NME and FR in %, 2 decimals; AUC as a fraction, 4
    rows = {row["subset"]: row for row in _markdown_rows((out / "metrics.md").read_text())}
    subsets = [name for name in ("pose", "expression", "illumination", "makeup", "occlusion",
                                 "blur") if f"test/{name}/nme" in results]
    assert list(rows) == ["full", *subsets]
    for name, row in rows.items():
        prefix = "test/" if name == "full" else f"test/{name}/"
        assert row["NME (%)"] == f"{100 * results[prefix + 'nme']:.2f}", name
        assert row["FR@0.1 (%)"] == f"{100 * results[prefix + 'fr']:.2f}", name
        assert row["AUC@0.1"] == f"{results[prefix + 'auc']:.4f}", name
    for name in ("ced.png", "predictions.png", "checkpoints/last.ckpt"):
        assert (out / name).stat().st_size > 0, name
    # The one epoch's weights, reloaded from last.ckpt into a freshly built model, score the
    # same test NME (the run tested the best checkpoint: with one epoch, the same weights).
    datamodule, model, trainer = build(compose_cfg("trainer.max_epochs=1", "callbacks=none",
                                                   "logger=none"))
    trainer.test(model, datamodule=datamodule, ckpt_path=str(out / "checkpoints" / "last.ckpt"),
                 verbose=False)
    assert model.test_results["test/nme"] == pytest.approx(results["test/nme"], rel=1e-12)


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
    ("model.compile_mode=fast", "'model.compile_mode': 'fast' .* one of None, 'default'"),
])
def test_bad_value_or_key_fails_before_anything_is_built(compose_cfg, override, message):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=message):
        run(cfg)


def test_compile_mode_reaches_torch_compile(compose_cfg, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda net, **kwargs: seen.append(kwargs) or net)
    _, model, _ = build(compose_cfg("model.compile=true", "model.compile_mode=reduce-overhead"))
    assert model.net_forward() is model.net_forward()  # compiled once, on first use
    assert seen == [{"mode": "reduce-overhead"}]
    with pytest.raises(ConfigError, match="compile_mode='max-autotune' needs compile=true"):
        build(compose_cfg("model.compile_mode=max-autotune"))


def test_nan_loss_stops_with_the_step_number(compose_cfg):
    cfg = compose_cfg("debug=fast_dev_run", "callbacks=none", "model.loss.heatmap_weight=nan",
                      "trainer.fast_dev_run=3")
    with pytest.raises(NonFiniteLossError, match=r"global step 0 \(epoch 0, batch 0\)"):
        run(cfg)


@pytest.mark.slow
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


class _NanFrom(L.Callback):
    """Makes the heatmap loss weight NaN from global step ``step`` on; counts training steps."""

    def __init__(self, step: int) -> None:
        self.step, self.steps_run = step, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.steps_run += 1
        if trainer.global_step >= self.step:
            module.loss.heatmap_weight = float("nan")


@pytest.mark.parametrize(("nan_from", "steps_run"), [(2, 5), (6, 8)])
def test_nan_loss_at_a_later_step_is_named_at_the_next_check(compose_cfg, nan_from, steps_run):
    # 8 steps, checked every 5 steps and at epoch end: a NaN from step 2 stops training after
    # step 4 (the first check), one from step 6 at epoch end; both name the step it began
    cfg = compose_cfg("callbacks=none", "data.train_size=32", "trainer.log_every_n_steps=5",
                      "test=false")
    datamodule, model, trainer = build(cfg)
    nan = _NanFrom(nan_from)
    trainer.callbacks.append(nan)
    match = rf"global step {nan_from} \(epoch 0, batch {nan_from}\): loss=nan, heatmap="
    with pytest.raises(NonFiniteLossError, match=match):
        trainer.fit(model, datamodule=datamodule)
    assert nan.steps_run == steps_run


class _SyncCounter(L.Callback):
    """Counts host read-backs of tensors (each a device sync on a GPU) during training batches.

    Counting runs from each batch's on_train_batch_start until the next batch is fetched (the
    loader's own work is not the step's), so it covers training_step, backward, the batch-end
    hooks and Lightning's per-batch logging and progress-bar updates; not the optimizer's
    update itself (see on_before_optimizer_step).
    """

    READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__",
             "__index__")

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        self.active = self.suspended = False
        self.steps = 0
        for name in self.READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(name, original))
        # x.to("cpu"); x.to(self.device) is a no-op here, and a host->device copy looks like
        # one on a CPU-only machine: test_training_step_makes_no_cuda_sync sees both on a GPU
        monkeypatch.setattr(torch.Tensor, "to", self._counting(
            "to(cpu)", torch.Tensor.to, lambda self, *a, **k: any(
                isinstance(v, str) and v.startswith("cpu") for v in (*a, *k.values()))))
        # x[mask]: the result's size is read back from the device
        monkeypatch.setattr(torch.Tensor, "__getitem__", self._counting(
            "x[mask]", torch.Tensor.__getitem__, lambda self, index: any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for i in (index if isinstance(index, tuple) else (index,)))))
        for name in ("nonzero", "unique", "masked_select"):
            monkeypatch.setattr(torch, name, self._counting(name, getattr(torch, name)))

    @property
    def counting(self) -> bool:
        return self.active and not self.suspended

    def _counting(self, name, original, when=None):
        def wrapper(*args, **kwargs):
            if self.counting and (when is None or when(*args, **kwargs)):
                self.calls.append(name)
            return original(*args, **kwargs)
        return wrapper

    def wrap_loader(self, datamodule) -> None:
        make = datamodule.train_dataloader
        counter = self

        class Loader:
            def __init__(self) -> None:
                self.loader = make()

            def __len__(self) -> int:
                return len(self.loader)

            def __iter__(self):
                iterator = iter(self.loader)
                while True:
                    counter.suspended = True
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        return
                    finally:
                        counter.suspended = False
                    yield batch

        datamodule.train_dataloader = Loader

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.active = True
        self.steps += 1

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        # Adam reads its step counter with .item(): a CPU tensor also on a GPU (unless
        # capturable or fused), so not a sync there; the CUDA test below covers the update
        self.suspended = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.suspended = False

    def on_train_epoch_end(self, trainer, module) -> None:
        self.active = False


@pytest.mark.parametrize("prog_bar_loss", [False, True])
def test_training_batches_make_no_host_sync(compose_cfg, monkeypatch, prog_bar_loss):
    """Between two log intervals no training batch reads a tensor back to the host.

    prog_bar_loss=True is the control: the loss logged from training_step with prog_bar=True
    (as before) is turned into a number with .item() after every batch, and is counted.
    """
    counter = _SyncCounter(monkeypatch)
    # 4 steps, logged every 50: Lightning's and our interval read-backs do not fall in them
    cfg = compose_cfg("callbacks=none", "trainer.log_every_n_steps=50", "test=false",
                      "+trainer.limit_val_batches=0")
    datamodule, model, trainer = build(cfg)
    trainer.callbacks.append(counter)
    counter.wrap_loader(datamodule)
    if prog_bar_loss:
        training_step = model.training_step

        def with_prog_bar(batch, batch_idx):
            loss = training_step(batch, batch_idx)
            model.log("train/loss_bar", loss, prog_bar=True, logger=False)
            return loss

        model.training_step = with_prog_bar
    trainer.fit(model, datamodule=datamodule)
    assert counter.steps == 4 and trainer.global_step == 4
    if prog_bar_loss:
        assert counter.calls.count("item") >= 4
    else:
        assert counter.calls == []
    # the instrument itself: a read-back while counting is counted
    counter.active, counter.calls = True, []
    bool(torch.ones(()))
    torch.ones(2)[torch.tensor([True, False])]
    torch.ones(2).to("cpu")
    counter.active = False
    assert counter.calls == ["__bool__", "x[mask]", "to(cpu)"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_step_makes_no_cuda_sync(compose_cfg):
    """On a GPU, CUDA's sync debug mode sees every sync, host->device copies included."""
    cfg = compose_cfg("callbacks=none", "trainer=gpu", "trainer.log_every_n_steps=2",
                      "test=false", "+trainer.limit_val_batches=0")
    datamodule, model, trainer = build(cfg)
    training_step, steps = model.training_step, []

    def strict(batch, batch_idx):
        # from the second step on: the first registers Lightning's logged-metric states
        if steps:
            torch.cuda.set_sync_debug_mode("error")
        try:
            return training_step(batch, batch_idx)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            steps.append(batch_idx)

    model.training_step = strict
    trainer.fit(model, datamodule=datamodule)
    assert len(steps) == 4


def test_checkpoints_hold_each_weight_once_and_old_ones_still_load(compose_cfg):
    """The net is stored once; checkpoints that also held the ``forward_net.`` alias load."""
    model = instantiate_node(compose_cfg(), "model")
    state = model.state_dict()
    assert not any(k.startswith("forward_net.") for k in state)
    legacy = {**state, **{f"forward_net.{k[4:]}": v + 1 for k, v in state.items()
                          if k.startswith("net.")}}
    fresh = instantiate_node(compose_cfg(), "model")
    fresh.load_state_dict(legacy)                      # strict: no unexpected keys
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value)
