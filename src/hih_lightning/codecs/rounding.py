"""Randomized rounding (Yu & Tao, "Heatmap Regression via Randomized Rounding", TPAMI 2021).

Why: a Gaussian target centred on the rounded pixel makes argmax biased by up to half a
pixel per axis. Rounding at random instead, up with probability equal to the fraction
(P(i = floor(p) + 1) = p - floor(p)), makes the integer target unbiased in expectation:
E[i] = p. A network trained with MSE converges to the expected target, a mixture of the two
Gaussians at floor(p) and floor(p) + 1 per axis, and decoding from those two activation
points per axis recovers the fraction.
"""

from __future__ import annotations

import math

import torch

from hih_lightning.codecs.base import Codec, Decoded
from hih_lightning.codecs.gaussian import (
    flat_argmax,
    gather_pixels,
    render_gaussians,
    working_dtype,
)
from hih_lightning.models.output import NetOutput


def _profiles(centres: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """1-D Gaussians g(x - c) on ``size`` pixels for every coordinate of centres (..., 2).

    Returns (..., 2, size): the x profile, then the y profile. Each is one row of
    ``render_gaussians`` on a 1 x size grid with the centre placed at (c, 0).
    """
    c = torch.stack((centres, torch.zeros_like(centres)), dim=-1)      # (..., 2, 2)
    return render_gaussians(c, 1, size, sigma, dtype=centres.dtype)[..., 0, :]


class RandomizedRoundingCodec(Codec):
    """Gaussian on a randomly rounded pixel; decode from the two activation points per axis.

    encode: per axis i = floor(p) + Bernoulli(p - floor(p)), p clamped to [0, size-1]. The
    draw uses the *global* torch RNG (``torch.rand`` on the landmarks' device), so
    Lightning's ``seed_everything`` makes the targets, and hence runs, reproducible.
    ideal_output: the expected target (deterministic), what MSE training converges to.
    """

    def __init__(self, heatmap_size: int = 64, sigma: float = 1.5) -> None:
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)

    def __repr__(self) -> str:
        return f"RandomizedRoundingCodec(heatmap_size={self.heatmap_size}, sigma={self.sigma})"

    def _clamped(self, landmarks: torch.Tensor) -> torch.Tensor:
        p = landmarks.to(working_dtype(landmarks))
        return p.clamp(0, self.heatmap_size - 1)

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"heatmaps": (B, N, H, W) Gaussians at the drawn pixel, "integer": (B, N, 2) long}."""
        size = self.heatmap_size
        p = self._clamped(landmarks)
        lower = p.floor()
        up = torch.rand(p.shape, device=p.device, dtype=p.dtype) < (p - lower)
        integer = (lower + up.to(p.dtype)).clamp_(0, size - 1).long()
        return {"heatmaps": render_gaussians(integer, size, size, self.sigma),
                "integer": integer}

    def ideal_output(self, landmarks: torch.Tensor) -> NetOutput:
        """The expected target: per axis X(x) = (1-t) g(x - i0) + t g(x - i0 - 1), with
        i0 = floor(p) clamped to [0, size-2] and t = p - i0 in [0, 1]; the heatmap is the
        separable product Y(y) X(x) (the draws on the two axes are independent)."""
        size = self.heatmap_size
        p = self._clamped(landmarks)
        i0 = p.floor().clamp_(0, size - 2)
        t = (p - i0).unsqueeze(-1)                                          # (B, N, 2, 1)
        mix = ((1 - t) * _profiles(i0, size, self.sigma)
               + t * _profiles(i0 + 1, size, self.sigma)).float()          # (B, N, 2, size)
        heatmaps = mix[..., 1, :, None] * mix[..., 0, None, :]              # (B, N, H, W)
        return NetOutput(heatmaps=heatmaps.unsqueeze(1))

    def decode(self, output: NetOutput) -> Decoded:
        """Fraction from the 2x2 block at the argmax and its higher neighbour per axis.

        The expected target is separable, so the block's column sums are X(x0), X(x0+1)
        times a common factor, with X(x0) = (1-t) + t a and X(x0+1) = (1-t) a + t,
        a = exp(-1 / 2 sigma^2). Hence r = C1 / (C0 + C1) = ((1-t) a + t) / (1 + a) and
        t = (r (1 + a) - a) / (1 - a), exact; as sigma -> 0 it is the paper's weighted mean.
        """
        hm = output.heatmaps[:, -1]
        h, w = hm.shape[-2:]
        ix, iy, score = flat_argmax(hm)
        # left, right, up, down neighbours of the argmax; outside the map counts as -inf
        nx = torch.stack((ix - 1, ix + 1, ix, ix), dim=-1)
        ny = torch.stack((iy, iy, iy - 1, iy + 1), dim=-1)
        near = gather_pixels(hm, nx, ny)
        outside = (nx < 0) | (nx >= w) | (ny < 0) | (ny >= h)
        near = near.masked_fill_(outside, -math.inf)
        x0 = torch.where(near[..., 0] > near[..., 1], ix - 1, ix).clamp_(0, w - 2)
        y0 = torch.where(near[..., 2] > near[..., 3], iy - 1, iy).clamp_(0, h - 2)
        # the 2x2 block, ordered (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1)
        bx = torch.stack((x0, x0 + 1, x0, x0 + 1), dim=-1)
        by = torch.stack((y0, y0, y0 + 1, y0 + 1), dim=-1)
        block = gather_pixels(hm, bx, by).clamp_(min=0.0).unflatten(-1, (2, 2))
        a = math.exp(-1.0 / (2 * self.sigma * self.sigma))
        tx = self._fraction(block.sum(dim=-2), a)                          # column sums
        ty = self._fraction(block.sum(dim=-1), a)                          # row sums
        pts = torch.stack((x0.float() + tx, y0.float() + ty), dim=-1)
        return Decoded(pts, score)

    @staticmethod
    def _fraction(sums: torch.Tensor, a: float) -> torch.Tensor:
        """t from the two sums (..., 2) of a block along one axis (r = 0.5 if both are 0)."""
        total = sums.sum(dim=-1)
        r = torch.where(total > 0, sums[..., 1] / total.clamp_min(1e-30),
                        torch.full_like(total, 0.5))
        return ((r * (1 + a) - a) / (1 - a)).clamp_(0.0, 1.0)


__all__ = ["RandomizedRoundingCodec"]
