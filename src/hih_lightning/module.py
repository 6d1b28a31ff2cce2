"""The LightningModule: network + codec + loss + metrics, one path for every benchmark."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric

from hih_lightning.codecs import Codec
from hih_lightning.data.metainfo import get_meta
from hih_lightning.losses import LandmarkLoss
from hih_lightning.metrics import NME, LandmarkMetrics
from hih_lightning.models.hih import parameter_counts
from hih_lightning.models.output import NetOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step and the loss terms."""


# torch.compile's modes (None: its default); "reduce-overhead" replays CUDA graphs on a GPU
CompileMode = Literal[None, "default", "reduce-overhead", "max-autotune",
                      "max-autotune-no-cudagraphs"]


class FiniteLossWatch:
    """Finds the first non-finite training loss without a host round trip per step.

    ``update`` (every step) runs on the loss's device only: it keeps the global step of the
    first non-finite loss and the loss terms at that step in device tensors, so the step never
    waits for the accelerator. ``check`` (at the log interval and at epoch end) reads them back
    in one transfer and raises :class:`NonFiniteLossError` naming that step, its epoch and
    batch, and the terms. The host keeps (epoch, batch) of each step since the last check.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.step: torch.Tensor | None = None   # (), int64: first non-finite step, -1 if none
        self.first: torch.Tensor | None = None  # (T,): the loss terms at that step
        self.last: torch.Tensor | None = None   # (T,): the loss terms of the latest step
        self.names: list[str] = []
        self.where: dict[int, tuple[int, int]] = {}  # step -> (epoch, batch), since last check

    def update(self, losses: dict[str, torch.Tensor], step: int, epoch: int, batch: int
               ) -> None:
        self.last = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if self.step is None or self.step.device != self.last.device:
            self.step = torch.full((), -1, dtype=torch.int64, device=self.last.device)
            self.first = torch.full_like(self.last, math.nan)
            self.names = list(losses)
        new = ~torch.isfinite(losses["loss"].detach()) & (self.step < 0)
        self.step = torch.where(new, step, self.step)  # a Python int: no host->device copy
        self.first = torch.where(new, self.last, self.first)
        self.where.setdefault(step, (epoch, batch))

    def check(self) -> dict[str, float]:
        """Raise if a non-finite loss was recorded; else the latest step's terms (host)."""
        if self.step is None:
            return {}
        host = torch.cat([self.step.double().view(1), self.first.double(),
                          self.last.double()]).tolist()  # the one device->host transfer
        step, first, last = int(host[0]), host[1:1 + len(self.names)], host[1 + len(self.names):]
        if step >= 0:
            epoch, batch = self.where.get(step, (-1, -1))
            terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(self.names, first, strict=True))
            raise NonFiniteLossError(f"non-finite loss at global step {step} "
                                     f"(epoch {epoch}, batch {batch}): {terms}")
        self.where.clear()
        return dict(zip(self.names, last, strict=True))


def crop_to_image(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Map (B, N, 2) crop pixels back to image pixels with the inverse of (B, 2, 3) ``matrix``."""
    linear, shift = matrix[..., :2].double(), matrix[..., 2].double()
    inverse = torch.linalg.inv(linear)
    return torch.einsum("bij,bnj->bni", inverse, points.double() - shift[:, None, :])


class HIHLitModule(L.LightningModule):
    """Trains and evaluates any (network, codec, loss) combination on landmark batches.

    Targets are encoded on the training device from the batch's landmark coordinates;
    predictions are decoded, mapped back to original-image pixels and scored there.
    """

    def __init__(self, net: nn.Module, codec: Codec, loss: LandmarkLoss,
                 optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, dataset: str = "synthetic",
                 flip_test: bool = False, channels_last: bool = False,
                 compile: bool = False, compile_mode: CompileMode = None) -> None:
        super().__init__()
        # Optimizer/scheduler factories stay out of the checkpoint's hyper-parameters so that
        # checkpoints load with torch.load(weights_only=True); the run's config has them.
        self.save_hyperparameters(ignore=["net", "codec", "loss", "optimizer", "scheduler"],
                                  logger=False)
        self.net, self.codec, self.loss = net, codec, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.meta = get_meta(dataset)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer("flip_index", torch.tensor(self.meta.flip_map), persistent=False)
        self.val_metrics = LandmarkMetrics(self.meta)
        self.test_metrics = LandmarkMetrics(self.meta)
        # HIH only: validation and test also score the integer heatmap alone and the decimal
        # head's cell accuracy, which tell whether the decimal head has learned anything
        self.has_diagnostics = hasattr(codec, "diagnostics")
        if self.has_diagnostics:
            self.diag_metrics = nn.ModuleDict({
                stage: nn.ModuleDict({"nme_integer": NME(norm_indices=self.meta.inter_ocular),
                                      "decimal_acc": MeanMetric()})
                for stage in ("val", "test")})
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile_mode is not None and not compile:
            raise ValueError(f"compile_mode={compile_mode!r} needs compile=true")
        # (net, torch.compile(net)), made on first use; kept out of the module tree, where
        # the wrapper would store every weight a second time in each checkpoint
        self.__dict__["_compiled"] = None
        self.finite_watch = FiniteLossWatch()
        self._checked_step = -1

    # -- frames ---------------------------------------------------------------------------
    @property
    def stride(self) -> float:
        return self.input_size / self.codec.heatmap_size

    @property
    def input_size(self) -> int:
        return self.codec.heatmap_size * 4

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> ImageNet-normalised float, made on the device."""
        x = (images.float() - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: torch.Tensor) -> NetOutput:
        return self.net_forward()(self.normalise(images))

    def net_forward(self) -> nn.Module:
        """``self.net``, compiled when ``compile=true`` (recompiled if the net was replaced)."""
        if not self.hparams.compile:
            return self.net
        cached = self.__dict__["_compiled"]  # (the net it compiled, the compiled module)
        if cached is None or cached[0] is not self.net:
            cached = (self.net, torch.compile(self.net, mode=self.hparams.compile_mode))
            self.__dict__["_compiled"] = cached
        return cached[1]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        """Checkpoints written before commit 4924ed0 also hold every weight under
        ``forward_net.`` (the then registered alias of ``net``): those copies are dropped."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("forward_net.")}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def predict_crop(self, images: torch.Tensor, output: NetOutput | None = None
                     ) -> torch.Tensor:
        """Landmarks in crop pixels (B, N, 2); averaged with the mirrored flip when enabled.

        ``output``: the network's output for ``images`` when the caller already has it.
        """
        output = self(images) if output is None else output
        points = self.codec.decode(output).landmarks * self.stride
        if self.hparams.flip_test:
            flipped = self.codec.decode(self(images.flip(-1))).landmarks * self.stride
            flipped = flipped[:, self.flip_index]
            flipped[..., 0] = (images.shape[-1] - 1) - flipped[..., 0]
            points = (points + flipped) / 2
        return points

    def on_fit_start(self) -> None:
        counts = parameter_counts(self.net)
        rank_zero_info(f"parameters: {counts['used']:,} used; {counts['published']:,} by the "
                       "published count (which adds never-used skip convs)")

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # No host round trip here (tests/test_train.py counts them): the finiteness check is
        # recorded on the device and read back at the log interval (on_train_batch_end), and
        # the logged tensors stay on the device until Lightning logs them at that interval.
        targets = self.codec.encode(batch["landmarks"] / self.stride)
        if "visible" in batch:
            targets["weights"] = batch["visible"].float()
        losses = self.loss(self(batch["image"]), targets)
        self.finite_watch.update(losses, self.global_step, self.current_epoch, batch_idx)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False,
                      batch_size=batch["image"].shape[0])
        return losses["loss"]

    def _check_finite(self) -> dict[str, float]:
        """Raise NonFiniteLossError for a non-finite loss since the last check (one sync)."""
        self._checked_step = self.global_step
        return self.finite_watch.check()

    def on_train_start(self) -> None:
        self.finite_watch.reset()
        self._checked_step = -1

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.get("compile_mode") == "reduce-overhead":
            # a new training iteration for the CUDA graphs: the previous replay's outputs may
            # be overwritten (none is kept across steps; the loss terms are copies)
            torch.compiler.cudagraph_mark_step_begin()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # global_step counts the optimizer steps done, this batch's included
        interval = max(1, self.trainer.log_every_n_steps)
        if self.global_step % interval or self.global_step == self._checked_step:
            return
        last = self._check_finite()
        # The progress bar shows the loss of the last step of each log interval. Lightning
        # turns every prog_bar value into a Python number with .item() after *every* batch
        # (a stale one too), which on a GPU waits for the queued step: logging the loss from
        # training_step with prog_bar=True cost one sync per step. A CPU tensor read at the
        # interval's one sync costs nothing to convert.
        if "loss" in last:
            self.log("train/loss_step", torch.tensor(last["loss"]), prog_bar=True, logger=False)

    def on_validation_start(self) -> None:
        # in fit: validate (and checkpoint) no weights that a non-finite loss has touched
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self._check_finite()

    def on_train_epoch_end(self) -> None:
        self._check_finite()

    def on_train_end(self) -> None:
        self._check_finite()  # e.g. max_steps reached between two log intervals

    def _evaluate(self, batch: dict[str, torch.Tensor], metrics: LandmarkMetrics,
                  output: NetOutput | None = None) -> None:
        preds = crop_to_image(self.predict_crop(batch["image"], output), batch["matrix"])
        metrics.update(preds, batch["landmarks_image"].double(), batch.get("attributes"))

    def _diagnose(self, batch: dict[str, torch.Tensor], output: NetOutput, stage: str) -> None:
        if not self.has_diagnostics:
            return
        diag = self.codec.diagnostics(output, batch["landmarks"] / self.stride)
        centre = crop_to_image(diag["integer_centre"] * self.stride, batch["matrix"])
        metrics = self.diag_metrics[stage]
        metrics["nme_integer"].update(centre, batch["landmarks_image"].double())
        metrics["decimal_acc"].update(diag["decimal_hit"].float())

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        output = self(batch["image"])
        self._evaluate(batch, self.val_metrics, output)
        self._diagnose(batch, output, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        output = self(batch["image"])
        self._evaluate(batch, self.test_metrics, output)
        self._diagnose(batch, output, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Landmarks in original-image pixels, (B, N, 2)."""
        return crop_to_image(self.predict_crop(batch["image"]), batch["matrix"])

    def _log_metrics(self, metrics: LandmarkMetrics, stage: str) -> dict[str, float]:
        values = {f"{stage}/{k}": float(v) for k, v in metrics.compute().items()
                  if not math.isnan(float(v))}
        if self.has_diagnostics:
            for name, metric in self.diag_metrics[stage].items():
                values[f"{stage}/{name}"] = float(metric.compute())
                metric.reset()
        # Already reduced across processes, so equal on all of them: their mean is the value
        # itself (exactly), and saying sync_dist spares one Lightning warning per key in DDP.
        self.log_dict(values, sync_dist=True)
        return values

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics(self.test_metrics, "test")
        with self.test_metrics.sync_context():  # every process's images, for the CED plot
            self.test_errors = self.test_metrics.per_image_errors().cpu().numpy()
        self.test_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer),
                                 "interval": "epoch"}}
