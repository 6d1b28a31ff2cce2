"""Training losses for every (head, codec) combination, with HIH's published scaling.

Scaling conventions (they fix what the loss weights mean):
- heatmap MSE: mean over (B, N, H, W) per stack, **summed** over stacks, as the published
  code adds one MSE loss per stack. A 4-stack model's heatmap term is ~4x a 1-stack one.
- CSC: KL(labels || softmax(logits)) with PyTorch reduction 'mean', i.e. divided by
  B*N*k*k (not by B): the published weight 0.05 was tuned at that scale.
- Per-landmark weights (B, N) (``targets["weights"]``, e.g. visibility) multiply the
  elementwise loss; the mean still divides by the full element count, so the loss scale
  does not jump with the number of visible landmarks in a batch.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from hih_lightning.codecs.heatmap import SoftArgmaxCodec
from hih_lightning.codecs.hih import read_decimal_maps, stitch_mosaic
from hih_lightning.codecs.offset import read_offset_maps
from hih_lightning.models.output import NetOutput

DecimalLoss = Literal["csc", "mse", "none"]
_DECIMAL_MODES = get_args(DecimalLoss)


def _weighted_mean(elementwise: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, N, ...) elementwise losses, optionally weighted per landmark (B, N)."""
    if weights is not None:
        w = weights.to(elementwise.dtype)
        elementwise = elementwise * w.reshape(*w.shape, *([1] * (elementwise.dim() - w.dim())))
    return elementwise.mean()


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over stacks of the per-stack MSE; pred (B, S, N, H, W), target (B, N, H, W).

    Every stack is supervised with the same target (intermediate supervision).
    """
    if pred.dim() != 5:
        raise ValueError(f"pred must be (B, S, N, H, W), got {tuple(pred.shape)}")
    diff = (pred.float() - target.float().unsqueeze(1)).square()      # (B, S, N, H, W)
    if weights is not None:
        diff = diff * weights.float()[:, None, :, None, None]
    return diff.mean(dim=(0, 2, 3, 4)).sum()


def csc_loss(logits: torch.Tensor, labels: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """Coordinate soft-classification: KL(labels || softmax(logits)), mean over B*N*k*k.

    logits (B, N, k, k), labels (B, N, k*k). Equal to the published
    F.kl_div(..., reduction='mean'), so the published weight 0.05 keeps its meaning; the mean
    is taken explicitly because PyTorch has announced that 'mean' will become 'batchmean'.
    """
    logp = torch.log_softmax(logits.float().flatten(-2), dim=-1)
    labels = labels.float().reshape(logp.shape)
    return _weighted_mean(F.kl_div(logp, labels, reduction="none"), weights)


def simcc_kl(logits: torch.Tensor, labels: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """SimCC: KL(labels || softmax(logits)) summed over the bins, mean over (B, N, axis).

    logits and labels (B, N, 2, bins); the per-landmark sum keeps the loss independent of
    the number of bins (RTMPose's KLDiscretLoss without its temperature).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    kl = F.kl_div(logp, labels.float(), reduction="none").sum(dim=-1)   # (B, N, 2)
    return _weighted_mean(kl, weights)


def decimal_mse(logits: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between decimal logits and the decimal Gaussian (B, N, k, k) (ICCV-W variant)."""
    return _weighted_mean((logits.float() - target.float()).square(), weights)


def offset_l1(pred: torch.Tensor, target: torch.Tensor, integer: torch.Tensor | None = None,
              weights: torch.Tensor | None = None, valid: torch.Tensor | None = None
              ) -> torch.Tensor:
    """L1 between predicted and target offsets (B, N, 2).

    pred is (B, N, 2) (FC head) or (B, N, 2, H, W) offset maps, which are read at the target
    integer pixel ``integer`` (B, N, 2) long (CenterNet practice: supervise at the GT pixel).
    A codec window gives M pixels per landmark: ``integer`` and ``target`` (B, N, M, 2) and
    ``valid`` (B, N, M), the pixels on the map; their errors are summed over the M pixels, so
    the weight is per pixel, as the HIH window's CSC.
    """
    if pred.dim() == 5:
        if integer is None:
            raise ValueError("offset maps need the target integer pixel (targets['integer'])")
        pred = read_offset_maps(pred, integer[..., 0], integer[..., 1])
    elif valid is not None:
        raise ValueError("a codec window trains offset maps at several pixels: the head must "
                         "give (B, N, 2, H, W) maps (net.head=offset_map), got "
                         f"{tuple(pred.shape)}")
    err = (pred.float() - target.float()).abs()
    if valid is not None:
        err = (err * valid.unsqueeze(-1)).sum(dim=2)
    return _weighted_mean(err, weights)


def integral_l1(heatmaps: torch.Tensor, coords: torch.Tensor, codec: SoftArgmaxCodec,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between soft-argmax coordinates and ``coords`` (B, N, 2), summed over stacks.

    heatmaps (B, S, N, H, W) or (B, N, H, W); the codec supplies the soft-argmax (its beta).
    """
    if heatmaps.dim() == 4:
        heatmaps = heatmaps.unsqueeze(1)
    pts = codec.soft_argmax(heatmaps)                                  # (B, S, N, 2)
    err = (pts - coords.float().unsqueeze(1)).abs()
    if weights is not None:
        err = err * weights.float()[:, None, :, None]
    return err.mean(dim=(0, 2, 3)).sum()


class LandmarkLoss:
    """Weighted sum of the terms that the output and targets call for.

    - "heatmap": always (targets["heatmaps"]).
    - decimal ("csc" -> key "csc", "mse" -> key "decimal_mse"): when output.decimals is
      present and ``decimal != "none"``; needs targets "decimal_labels" / "decimals".
    - "offset": when output.offsets is present and offset_weight > 0; needs "offsets"
      (and "integer" for offset maps, or a window's "offset_pixels" and "offset_valid").
    - "simcc": when output.simcc is present and simcc_weight > 0; needs "simcc_labels".
    - "integral": when integral_weight > 0; needs "coords".
    Local decimal maps (``LocalDecimals``) are read at targets["integer"], the true pixel, or,
    when the codec has a window, at targets["decimal_pixels"], stitched into one mosaic.
    A term whose output is present but whose target is missing, or whose target is present
    (and the term enabled) but whose output is missing, raises ValueError: that is a
    codec/head mismatch in the config, never something to skip silently.
    Optional targets["weights"] (B, N) weights every term per landmark.
    Returns {"loss": total, <term>: unweighted value, ...}.
    """

    def __init__(self, heatmap_weight: float = 1.0, decimal: DecimalLoss = "csc",
                 decimal_weight: float = 0.05, offset_weight: float = 1.0,
                 integral_weight: float = 0.0,
                 integral_codec: SoftArgmaxCodec | None = None,
                 simcc_weight: float = 1.0) -> None:
        if decimal not in _DECIMAL_MODES:
            raise ValueError(f"decimal must be one of {_DECIMAL_MODES}, got {decimal!r}")
        self.heatmap_weight = float(heatmap_weight)
        self.decimal = decimal
        self.decimal_weight = float(decimal_weight)
        self.offset_weight = float(offset_weight)
        self.integral_weight = float(integral_weight)
        self.integral_codec = integral_codec
        self.simcc_weight = float(simcc_weight)

    def __repr__(self) -> str:
        return (f"LandmarkLoss(heatmap_weight={self.heatmap_weight}, decimal={self.decimal!r}, "
                f"decimal_weight={self.decimal_weight}, offset_weight={self.offset_weight}, "
                f"integral_weight={self.integral_weight}, simcc_weight={self.simcc_weight})")

    @staticmethod
    def _need(targets: dict[str, torch.Tensor], key: str, term: str) -> torch.Tensor:
        if key not in targets:
            raise ValueError(f"loss term {term!r} needs targets[{key!r}], which the codec did "
                             f"not produce (have: {sorted(targets)}); check the codec/head")
        return targets[key]

    def __call__(self, output: NetOutput, targets: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
        """All active terms and their weighted total under "loss"."""
        w = targets.get("weights")
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        hm_target = self._need(targets, "heatmaps", "heatmap")
        terms["heatmap"] = (self.heatmap_weight, heatmap_mse(output.heatmaps, hm_target, w))

        if self.decimal != "none":
            if output.decimals is not None:
                logits, dw, mosaic_scale = output.decimals, w, 1
                if not (torch.is_tensor(logits) and logits.dim() == 4):
                    # local maps: read at the true pixel, or at the M pixels of the codec's
                    # window (B, N, M, 2) laid side by side as one mosaic per landmark
                    pixels = targets.get("decimal_pixels")
                    if pixels is None:
                        pixels = self._need(targets, "integer", "local decimal maps")
                        logits = read_decimal_maps(logits, pixels[..., 0], pixels[..., 1])
                    else:
                        reads = read_decimal_maps(logits, pixels[..., 0], pixels[..., 1])
                        logits = stitch_mosaic(reads, self._need(targets, "decimal_valid",
                                                                 "mosaic"))
                        # csc_loss averages over the mosaic's M*k*k cells: times M keeps the
                        # scale of one pixel's k*k, so decimal_weight means what it means at r=0
                        mosaic_scale = pixels.shape[2]
                if self.decimal == "csc":
                    labels = self._need(targets, "decimal_labels", "csc")
                    labels = labels.reshape(*logits.shape[:2], -1)
                    terms["csc"] = (self.decimal_weight,
                                    mosaic_scale * csc_loss(logits, labels, dw))
                elif mosaic_scale > 1:
                    raise ValueError("decimal='mse' reads one pixel's k x k map; a codec window "
                                     "(a mosaic with masked cells) needs decimal='csc'")
                else:
                    dec = self._need(targets, "decimals", "decimal_mse")
                    dec = dec.reshape(logits.shape)
                    terms["decimal_mse"] = (self.decimal_weight, decimal_mse(logits, dec, dw))
            elif "decimals" in targets or "decimal_labels" in targets:
                raise ValueError(f"decimal={self.decimal!r} and the codec made decimal targets, "
                                 "but the network output has no decimals (no HIH head)")

        if self.offset_weight > 0:
            if output.offsets is not None:
                off = self._need(targets, "offsets", "offset")
                pixels = targets.get("offset_pixels", targets.get("integer"))
                terms["offset"] = (self.offset_weight,
                                   offset_l1(output.offsets, off, pixels, w,
                                             targets.get("offset_valid")))
            elif "offsets" in targets:
                raise ValueError("the codec made offset targets but the network output has no "
                                 "offsets (no offset head)")

        if self.simcc_weight > 0:
            if output.simcc is not None:
                labels = self._need(targets, "simcc_labels", "simcc")
                terms["simcc"] = (self.simcc_weight, simcc_kl(output.simcc, labels, w))
            elif "simcc_labels" in targets:
                raise ValueError("the codec made SimCC targets but the network output has no "
                                 "SimCC logits (set net.head=simcc)")

        if self.integral_weight > 0:
            coords = self._need(targets, "coords", "integral")
            codec = self.integral_codec
            if codec is None:
                codec = self.integral_codec = SoftArgmaxCodec(output.heatmaps.shape[-1])
            terms["integral"] = (self.integral_weight,
                                 integral_l1(output.heatmaps, coords, codec, w))

        total = sum(weight * value for weight, value in terms.values())
        result = {"loss": total}
        result.update({name: value for name, (_, value) in terms.items()})
        return result
