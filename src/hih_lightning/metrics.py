"""Landmark metrics: NME, failure rate, AUC and the cumulative error curve (HIH_SPEC section 6).

Every metric here is built on one function, :func:`per_image_nme`, and keeps the per-image
errors themselves as its state (``dist_reduce_fx="cat"``): FR, AUC and the CED need the whole
error distribution, and a mean of concatenated errors is exactly the single-process mean, so
multi-GPU numbers equal single-GPU numbers. Errors are accumulated in float64 so that results
match a plain numpy computation to 1e-6 regardless of the network's precision.

Normalisation (``norm``):

- ``"pair"`` (default): the distance between two ground-truth landmarks, ``norm_indices``
  (inter-ocular or inter-pupil, from :mod:`hih_lightning.data.metainfo`).
- ``"box"``: ``sqrt(w * h)`` of the axis-aligned bounding box of *all* ground-truth landmarks
  of the image (the "box" normalisation used e.g. for COFW-68 / AFLW style protocols).

AUC is the *exact* integral of the empirical cumulative error distribution
``F(t) = #{e_i <= t} / n`` over ``[0, threshold]``, divided by ``threshold``:
``AUC = mean_i(max(0, threshold - e_i)) / threshold``. The published evaluation (and mmpose)
samples ``F`` on a grid and integrates with Simpson's rule (SciPy's removed ``simps``) or the
trapezoid rule; those are approximations of this same number that converge to it as the grid
gets finer, differing by O(threshold / steps) — a few 1e-4 on the usual 1000-point grids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hih_lightning.data.metainfo import DatasetMeta

NORM_MODES = ("pair", "box")

__all__ = [
    "AUC",
    "NME",
    "NORM_MODES",
    "CumulativeErrorCurve",
    "FailureRate",
    "LandmarkMetrics",
    "auc_from_errors",
    "ced_curve",
    "failure_rate",
    "normaliser",
    "per_image_nme",
]


# -- functions --------------------------------------------------------------------------------
def _check_points(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape or preds.ndim != 3 or preds.shape[-1] != 2:
        raise ValueError(f"preds and target must both be (B, N, 2); got {tuple(preds.shape)} "
                         f"and {tuple(target.shape)}")


def normaliser(target: Tensor, norm_indices: Sequence[int] | None = None,
               norm: str = "pair") -> Tensor:
    """Per-image normalising distance (B,) of ground-truth landmarks ``target`` (B, N, 2)."""
    target = torch.as_tensor(target).double()
    if norm == "pair":
        if norm_indices is None or len(norm_indices) != 2:
            raise ValueError(f"norm='pair' needs norm_indices=(a, b), got {norm_indices!r}")
        a, b = norm_indices
        return torch.linalg.vector_norm(target[:, a] - target[:, b], dim=-1)
    if norm == "box":
        extent = target.amax(dim=1) - target.amin(dim=1)
        return torch.sqrt(extent[:, 0] * extent[:, 1])
    raise ValueError(f"unknown norm {norm!r}; valid: {NORM_MODES}")


def per_image_nme(preds: Tensor, target: Tensor, norm_indices: Sequence[int] | None = None,
                  norm: str = "pair", mask: Tensor | None = None) -> Tensor:
    """Per-image NME (B,), float64: mean point-to-point error / the image's normaliser.

    ``mask`` (B, N) bool restricts the mean to the landmarks that are True (e.g. visible
    ones); the normaliser always uses the ground truth as given.
    """
    preds, target = torch.as_tensor(preds), torch.as_tensor(target)
    _check_points(preds, target)
    dist = torch.linalg.vector_norm(preds.double() - target.double(), dim=-1)  # (B, N)
    if mask is None:
        mean_dist = dist.mean(dim=1)
    else:
        mask = torch.as_tensor(mask, device=dist.device).bool()
        if mask.shape != dist.shape:
            raise ValueError(f"mask must be (B, N) = {tuple(dist.shape)}, got {tuple(mask.shape)}")
        count = mask.sum(dim=1)
        if bool((count == 0).any()):
            raise ValueError("mask leaves an image with no landmark to score")
        mean_dist = (dist * mask).sum(dim=1) / count
    return mean_dist / normaliser(target, norm_indices, norm)


def failure_rate(errors: Tensor, threshold: float = 0.1) -> Tensor:
    """Fraction of images whose NME is strictly above ``threshold`` (NaN when empty)."""
    errors = torch.as_tensor(errors).double()
    if errors.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (errors > threshold).double().mean()


def auc_from_errors(errors: Tensor, threshold: float = 0.1) -> Tensor:
    """Exact area under the empirical CED on [0, threshold], divided by threshold.

    Equals ``mean(max(0, threshold - e_i)) / threshold``: 1 when every error is 0, 0 when every
    error is >= threshold (NaN when empty).
    """
    errors = torch.as_tensor(errors).double()
    if errors.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return (threshold - errors).clamp(min=0).mean() / threshold


def ced_curve(errors: Tensor, threshold: float = 0.1, steps: int = 1001) -> tuple[Tensor, Tensor]:
    """Cumulative error distribution: (thresholds (steps,), fraction of errors <= each)."""
    errors = torch.as_tensor(errors).double().flatten()
    thresholds = torch.linspace(0.0, threshold, steps, dtype=torch.float64, device=errors.device)
    if errors.numel() == 0:
        return thresholds, torch.full_like(thresholds, float("nan"))
    fractions = (errors[None, :] <= thresholds[:, None]).double().mean(dim=1)
    return thresholds, fractions


# -- metrics ----------------------------------------------------------------------------------
class _PerImageErrors(Metric):
    """Shared state: the per-image NME of every image seen, gathered by concatenation."""

    is_differentiable = False
    higher_is_better: bool | None = False
    full_state_update = False

    def __init__(self, norm_indices: Sequence[int] | None = None, *, norm: str = "pair",
                 threshold: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if norm not in NORM_MODES:
            raise ValueError(f"unknown norm {norm!r}; valid: {NORM_MODES}")
        if norm == "pair" and (norm_indices is None or len(norm_indices) != 2):
            raise ValueError(f"norm='pair' needs norm_indices=(a, b), got {norm_indices!r}")
        self.norm_indices = tuple(norm_indices) if norm_indices is not None else None
        self.norm = norm
        self.threshold = float(threshold)
        self.add_state("errors", default=[], dist_reduce_fx="cat")
        # An empty rank contributes an empty tensor of self.dtype; make it match our float64.
        self.set_dtype(torch.float64)

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        self.errors.append(per_image_nme(preds, target, self.norm_indices, self.norm, mask))

    def _errors(self) -> Tensor:
        if isinstance(self.errors, Tensor):
            return self.errors.double()
        if len(self.errors) == 0:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        return dim_zero_cat(self.errors).double()


class NME(_PerImageErrors):
    """Mean over images of the per-image normalised mean error."""

    def compute(self) -> Tensor:
        errors = self._errors()
        if errors.numel() == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return errors.mean()


class FailureRate(_PerImageErrors):
    """Fraction of images with NME > ``threshold`` (FR@0.1 by default)."""

    def compute(self) -> Tensor:
        return failure_rate(self._errors(), self.threshold)


class AUC(_PerImageErrors):
    """Exact area under the cumulative error curve up to ``threshold``, over ``threshold``."""

    higher_is_better = True

    def compute(self) -> Tensor:
        return auc_from_errors(self._errors(), self.threshold)


class CumulativeErrorCurve(_PerImageErrors):
    """CED sampled at ``steps`` thresholds in [0, threshold]; compute -> (thresholds, fractions)."""

    higher_is_better = None

    def __init__(self, norm_indices: Sequence[int] | None = None, *, norm: str = "pair",
                 threshold: float = 0.1, steps: int = 1001, **kwargs) -> None:
        super().__init__(norm_indices, norm=norm, threshold=threshold, **kwargs)
        self.steps = int(steps)

    def compute(self) -> tuple[Tensor, Tensor]:
        return ced_curve(self._errors(), self.threshold, self.steps)


class LandmarkMetrics(Metric):
    """Everything a benchmark reports, in one DDP-safe metric keyed by stable strings.

    Keeps per-image inter-ocular errors (and inter-pupil ones when ``meta.inter_pupil``
    exists) plus the per-image attribute flags (B, A) in ``meta.subsets`` order. ``compute``
    returns float64 scalars:

    - ``"nme"``, ``"fr"``, ``"auc"`` — full set, inter-ocular;
    - ``"nme_ip"``, ``"fr_ip"``, ``"auc_ip"`` — full set, inter-pupil (if the dataset has it);
    - ``"<subset>/nme"``, ``"<subset>/fr"``, ``"<subset>/auc"`` (and ``/nme_ip`` ...) for each
      name in ``meta.subsets`` over the images whose flag is 1.

    The key set depends only on ``meta`` and ``subsets``; a subset with no image (or no
    attributes given) is NaN. Images updated with ``attributes=None`` belong to no subset.
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    def __init__(self, meta: DatasetMeta, subsets: bool = True, threshold: float = 0.1,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.meta = meta
        self.threshold = float(threshold)
        self.subset_names: tuple[str, ...] = tuple(meta.subsets) if subsets else ()
        self.add_state("errors", default=[], dist_reduce_fx="cat")
        if self.meta.inter_pupil is not None:
            self.add_state("errors_ip", default=[], dist_reduce_fx="cat")
        if self.subset_names:
            # Flattened (B * A,) so that every state is 1-D float64 and gathers alike.
            self.add_state("attributes", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(self, preds: Tensor, target: Tensor, attributes: Tensor | None = None,
               mask: Tensor | None = None) -> None:
        """Add a batch: preds/target (B, N, 2) image pixels, attributes (B, A) 0/1 flags."""
        self.errors.append(per_image_nme(preds, target, self.meta.inter_ocular, "pair", mask))
        if self.meta.inter_pupil is not None:
            self.errors_ip.append(
                per_image_nme(preds, target, self.meta.inter_pupil, "pair", mask))
        if self.subset_names:
            batch, width = preds.shape[0], len(self.subset_names)
            if attributes is None:
                flags = torch.zeros(batch, width, dtype=torch.float64, device=preds.device)
            else:
                flags = torch.as_tensor(attributes, device=preds.device).double()
                if flags.shape != (batch, width):
                    raise ValueError(f"{self.meta.name}: attributes must be (B, {width}) for "
                                     f"subsets {self.subset_names}, got {tuple(flags.shape)}")
            self.attributes.append(flags.flatten())

    @staticmethod
    def _cat(state: list[Tensor] | Tensor) -> Tensor:
        if isinstance(state, Tensor):
            return state.double()
        if len(state) == 0:
            return torch.zeros(0, dtype=torch.float64)
        return dim_zero_cat(state).double()

    def per_image_errors(self) -> Tensor:
        """Inter-ocular NME of every image seen so far (this process's, unless synced)."""
        return self._cat(self.errors)

    def _summary(self, errors: Tensor, suffix: str) -> dict[str, Tensor]:
        nme = errors.mean() if errors.numel() else torch.tensor(float("nan"), dtype=torch.float64)
        return {f"nme{suffix}": nme,
                f"fr{suffix}": failure_rate(errors, self.threshold),
                f"auc{suffix}": auc_from_errors(errors, self.threshold)}

    def compute(self) -> dict[str, Tensor]:
        per_norm = {"": self._cat(self.errors)}
        if self.meta.inter_pupil is not None:
            per_norm["_ip"] = self._cat(self.errors_ip)
        results: dict[str, Tensor] = {}
        for suffix, errors in per_norm.items():
            results.update(self._summary(errors, suffix))
        if self.subset_names:
            count = per_norm[""].numel()
            flags = self._cat(self.attributes).reshape(count, len(self.subset_names))
            for column, name in enumerate(self.subset_names):
                member = flags[:, column].to(per_norm[""].device) == 1
                for suffix, errors in per_norm.items():
                    part = self._summary(errors[member], suffix)
                    results.update({f"{name}/{key}": value for key, value in part.items()})
        return results

