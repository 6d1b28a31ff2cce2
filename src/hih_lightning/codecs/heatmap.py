"""Heatmap-only baselines HIH is compared with: argmax, quarter shift, DARK, soft-argmax.

All share one target renderer (``gaussian.render_gaussians``) and differ only in where the
Gaussian is centred and how the last stack's heatmap is read back. Heatmap pixel (x, y) is
centred at integer coordinate (x, y). Scores are the raw heatmap maximum.
"""

from __future__ import annotations

import torch

from hih_lightning.codecs.base import Codec, Decoded
from hih_lightning.codecs.gaussian import (
    flat_argmax,
    gather_patch,
    render_gaussians,
    working_dtype,
)
from hih_lightning.models.output import NetOutput

_ROUNDINGS = ("round", "floor", "none")


class ArgmaxCodec(Codec):
    """Gaussian on the rounded (or floored) pixel; decode = plain argmax.

    rounding: "round" (round half up, error <= 0.5 px per axis), "floor" (error in [0, 1)),
    or "none" (Gaussian at the sub-pixel point, i.e. unbiased targets).
    """

    def __init__(self, heatmap_size: int = 64, sigma: float = 1.5,
                 rounding: str = "round") -> None:
        if rounding not in _ROUNDINGS:
            raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        self.rounding = rounding

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
                f"rounding={self.rounding!r})")

    def centres(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Where the target Gaussian goes, (B, N, 2) float heatmap pixels."""
        p = landmarks.to(working_dtype(landmarks))
        if self.rounding == "none":
            return p
        q = torch.floor(p + 0.5) if self.rounding == "round" else torch.floor(p)
        return q.clamp_(0, self.heatmap_size - 1)

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"heatmaps": (B, N, H, W)} Gaussian targets, peak 1."""
        size = self.heatmap_size
        return {"heatmaps": render_gaussians(self.centres(landmarks), size, size, self.sigma)}

    def decode(self, output: NetOutput) -> Decoded:
        """Integer argmax of the last stack."""
        ix, iy, score = flat_argmax(output.heatmaps[:, -1])
        return Decoded(torch.stack((ix.float(), iy.float()), dim=-1), score)


class QuarterShiftCodec(ArgmaxCodec):
    """Argmax + 0.25 px toward the higher 4-neighbour per axis (Hourglass/HRNet practice).

    The shift is applied on an axis only when both neighbours on that axis are on the map
    (HRNet applies it only when both axes are interior). On an exactly rounded target the
    neighbours are equal and the shift is 0; it pays off on blurry/sub-pixel outputs, where
    it halves the mean argmax error (0.25 -> 0.125 px per axis for uniform sub-pixel
    positions).
    """

    def decode(self, output: NetOutput) -> Decoded:
        """Argmax, then the sign of the central difference times 0.25 per axis."""
        hm = output.heatmaps[:, -1]
        h, w = hm.shape[-2:]
        ix, iy, score = flat_argmax(hm)
        v = gather_patch(hm, ix, iy, 1)                                   # (..., 3, 3)
        sx = torch.sign(v[..., 1, 2] - v[..., 1, 0]) * ((ix >= 1) & (ix <= w - 2)).float()
        sy = torch.sign(v[..., 2, 1] - v[..., 0, 1]) * ((iy >= 1) & (iy <= h - 2)).float()
        pts = torch.stack((ix.float() + 0.25 * sx, iy.float() + 0.25 * sy), dim=-1)
        return Decoded(pts, score)


def gaussian_kernel_1d(size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps with OpenCV's default sigma for that size."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-t.square() / (2 * sigma * sigma))
    return (k / k.sum()).float()


def blur_band_matrix(size: int) -> torch.Tensor:
    """(3, size+2) matrix whose rows are the blur kernel shifted by 0, 1, 2: applied on both
    sides of a (size+2)^2 patch it gives the blurred 3x3 centre (a 'valid' separable blur)."""
    kern = gaussian_kernel_1d(size)
    band = torch.zeros(3, size + 2)
    for row in range(3):
        band[row, row:row + size] = kern
    return band


class DARKCodec(Codec):
    """DARK (Zhang et al., CVPR 2020): unbiased sub-pixel targets + Taylor refinement.

    encode: Gaussian centred on the sub-pixel point p (not rounded).
    decode: argmax m of the last stack; optionally Gaussian-modulate (blur with a
    ``blur_kernel``-tap Gaussian, OpenCV's sigma for that size; 0 or 1 disables); then
    x = m - H^-1 g with g and H the central-difference gradient and Hessian of
    log(heatmap) at m. Since the blur is linear and the refinement only needs the blurred
    3x3 neighbourhood of m, we blur a (2r+3)^2 patch gathered around m, not the whole map,
    with zero padding outside the map (OpenCV reflects; both bias points near the border:
    on ideal targets the zero-padded 11-tap blur costs < 0.01 px from 3 px in, 0.08 px at
    2 px, 0.33 px at 1 px; without blur the refinement is exact from 1 px in). The rescaling
    DARK applies after the blur does not change log-derivatives, so it is skipped.
    Refinement is applied only where m is at least one pixel from the border and the
    Hessian is negative definite; the step is clamped to +-1 px.
    A dense, untruncated Gaussian target has an exactly quadratic log, so without blur the
    round trip is exact to float precision in the interior.
    """

    def __init__(self, heatmap_size: int = 64, sigma: float = 1.5, blur_kernel: int = 11,
                 eps: float = 1e-10) -> None:
        if blur_kernel > 1 and blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd, got {blur_kernel}")
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        self.blur_kernel = int(blur_kernel)
        self.eps = float(eps)

    def __repr__(self) -> str:
        return (f"DARKCodec(heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
                f"blur_kernel={self.blur_kernel})")

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"heatmaps": (B, N, H, W)} Gaussians centred on the sub-pixel landmarks."""
        size = self.heatmap_size
        p = landmarks.to(working_dtype(landmarks))
        return {"heatmaps": render_gaussians(p, size, size, self.sigma)}

    def _neighbourhood(self, hm: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor
                       ) -> torch.Tensor:
        """(Blurred) 3x3 values around (ix, iy), (..., 3, 3) float32, indexed [dy, dx]."""
        r = self.blur_kernel // 2 if self.blur_kernel > 1 else 0
        patch = gather_patch(hm, ix, iy, r + 1)                          # (..., 2r+3, 2r+3)
        if r:
            band = blur_band_matrix(self.blur_kernel).to(patch.device)  # (3, 2r+3)
            patch = band @ patch @ band.T                                 # (..., 3, 3)
        return patch

    def decode(self, output: NetOutput) -> Decoded:
        """Argmax + one Newton step on log(heatmap)."""
        hm = output.heatmaps[:, -1]
        h, w = hm.shape[-2:]
        ix, iy, score = flat_argmax(hm)
        lg = self._neighbourhood(hm, ix, iy).clamp_min(self.eps).log()
        gx = 0.5 * (lg[..., 1, 2] - lg[..., 1, 0])
        gy = 0.5 * (lg[..., 2, 1] - lg[..., 0, 1])
        dxx = lg[..., 1, 2] - 2 * lg[..., 1, 1] + lg[..., 1, 0]
        dyy = lg[..., 2, 1] - 2 * lg[..., 1, 1] + lg[..., 0, 1]
        dxy = 0.25 * (lg[..., 2, 2] - lg[..., 2, 0] - lg[..., 0, 2] + lg[..., 0, 0])
        det = dxx * dyy - dxy * dxy
        ok = ((ix >= 1) & (ix <= w - 2) & (iy >= 1) & (iy <= h - 2)
              & (dxx < 0) & (det > 1e-12))
        inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)),
                          torch.zeros_like(det))
        ox = (-(dyy * gx - dxy * gy) * inv).clamp(-1.0, 1.0)
        oy = (-(dxx * gy - dxy * gx) * inv).clamp(-1.0, 1.0)
        pts = torch.stack((ix.float() + ox, iy.float() + oy), dim=-1)
        return Decoded(pts, score)


class SoftArgmaxCodec(Codec):
    """Integral regression: the expectation of softmax(beta * heatmap) over the pixel grid.

    encode: {"heatmaps": Gaussian at the sub-pixel point, "coords": p clipped to
    [0, H-1] (B, N, 2)} -- the expectation can never leave the grid, so the coordinate
    target is clipped while the heatmap target stays unbiased.
    beta: the softmax temperature, fixed. Near its top, exp(beta * g) of a peak-1 Gaussian g
    is a Gaussian of variance s2 = sigma^2 / beta, and the off-peak background (H*W cells of
    weight exp(0)) competes with the peak mass exp(beta) * 2*pi*s2. Two biases follow:
    the background pulls toward the map centre by ~ (H*W e^-beta / (2*pi*s2)) * H/2, and the
    discrete expectation of a narrow peak is pulled toward the nearest pixel by up to
    ~ 4*pi*s2 * exp(-2*pi^2*s2). For sigma 1.5 on 64x64 these balance at beta ~ 15-16:
    beta = 16 gives ~0.02 px of the first and ~0.11 px of the second (measured round-trip
    max ~0.11 px per axis); beta = 10 is off by ~3 px, beta = 40 by ~0.28 px.
    """

    def __init__(self, heatmap_size: int = 64, sigma: float = 1.5, beta: float = 16.0) -> None:
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.beta = float(beta)

    def __repr__(self) -> str:
        return (f"SoftArgmaxCodec(heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
                f"beta={self.beta})")

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"heatmaps": (B, N, H, W), "coords": (B, N, 2) float}."""
        size = self.heatmap_size
        p = landmarks.to(working_dtype(landmarks))
        return {"heatmaps": render_gaussians(p, size, size, self.sigma),
                "coords": p.clamp(0, size - 1).float()}

    def _expectation(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expected (x, y) (..., 2), max of beta * heatmap (...)), both float32."""
        h, w = heatmaps.shape[-2:]
        z = heatmaps.float().flatten(-2) * self.beta
        zmax = z.amax(dim=-1, keepdim=True).detach()
        e = z.sub_(zmax).exp_().unflatten(-1, (h, w))  # in place: 3 passes, autograd-safe
        xs = torch.arange(w, device=e.device, dtype=e.dtype)
        ys = torch.arange(h, device=e.device, dtype=e.dtype)
        rows = e.sum(dim=-1)                           # (..., H): one contiguous pass
        row_x = e @ xs                                 # (..., H): sum_x x * e, one pass
        total = rows.sum(dim=-1)
        coords = torch.stack((row_x.sum(dim=-1), rows @ ys), dim=-1) / total.unsqueeze(-1)
        return coords, zmax.squeeze(-1)

    def soft_argmax(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """Differentiable expected (x, y) of softmax(beta * heatmaps) over (..., H, W)."""
        return self._expectation(heatmaps)[0]

    def decode(self, output: NetOutput) -> Decoded:
        """Soft-argmax of the last stack; score = raw heatmap maximum."""
        coords, zmax = self._expectation(output.heatmaps[:, -1])
        return Decoded(coords, zmax / self.beta)


__all__ = ["ArgmaxCodec", "DARKCodec", "QuarterShiftCodec", "SoftArgmaxCodec",
           "blur_band_matrix", "gaussian_kernel_1d"]
