"""Heatmap in Heatmap: an integer heatmap names the pixel, a k x k decimal heatmap the fraction.

Correct (default) scheme, the first option of spec section 9:
  p = landmark / stride; i = clip(floor(p), 0, H-1); f = clip(p - i, 0, 1)  (f < 1 always)
  decimal class per axis c = floor(f * k) in 0..k-1, i.e. the k intervals [c/k, (c+1)/k)
  tile [0, 1) exactly; x and y jointly: class index = cy * k + cx, decimal map[cy, cx].
  decode: i = argmax of the last stack's integer heatmap, landmark = i + (c + 0.5) / k,
  the centre of the interval, so the residual quantization is at most 1/(2k) per axis and
  encode(decode(x)) == encode(x) exactly.

``published_compat=True`` reproduces the published release where its defects change numbers
(spec section 9): the integer Gaussian's window corner truncated toward zero (peak one pixel
too far for integer positions 0..4 when 3*sigma is not an integer), decimal class
round(f * k) (f >= 1 - 1/(2k) gives class k, off the k x k map), decoded as c / k, and the
decimal offset multiplied by (max decimal logit > 0). In that mode both Gaussians are also
cut to the published generator's 3-sigma window (see ``published_window``); we assume the
decimal map used the same generator (with sigma 1 the window is symmetric and the corner
exact, so only the cut applies). Half-way cases of round() round up (floor(f*k + 0.5)).

``window=r`` (the local head only, issue 28): the decimal heatmap the decode reads is the
mosaic of the local head's k x k maps of the (2r+1) x (2r+1) pixels around the integer
argmax, laid side by side (a local pixel shuffle, K = (2r+1)k cells per axis) under one
softmax. Each pixel still answers only for its own cells, so the head keeps its size and its
sharp per-pixel decimals, while the joint softmax makes pixels comparable: a neighbour's cell
can outscore the argmax pixel's, which repairs an integer argmax up to r pixels off. Decode:
landmark = i - r + (c + 0.5) / k, c in 0..K-1. Trained on the mosaic of radius 2r around the
true pixel (every pixel that a decode window at an argmax up to r off can show), cells of
pixels off the map masked out. r = 0 is HIH-local as first built (one read, the true pixel).

``decimal_decode="expectation"`` reads the decimal heatmap as the distribution the CSC loss
trains it to be: the landmark's fraction is the softmax-weighted mean of the cell centres
instead of the top cell's centre. The argmax throws away how the mass is spread, e.g. between
two neighbouring cells or across a pixel border; the published head decodes with the argmax.
It needs a window (r >= 1): then a label's Gaussian lies whole inside the decoded window, and
the mean is its centre, except on the map's outermost pixels, where the cells off the map are
cut and the mean is pulled inward by less than a cell.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

from hih_lightning.codecs.base import Codec, Decoded
from hih_lightning.codecs.gaussian import (
    flat_argmax,
    gather_pixels,
    render_gaussians,
    split_integer,
    window_pixels,
)
from hih_lightning.models.output import LocalDecimals, NetOutput

SoftLabel = Literal["softmax", "gaussian"]
DecimalDecode = Literal["argmax", "expectation"]
_SOFT_LABELS = get_args(SoftLabel)


def published_window(centre: torch.Tensor, sigma: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the published Gaussian generator actually puts a Gaussian asked for at ``centre``.

    The published code (HRNet-style) builds a window of ``size = 2*3*sigma + 1`` samples
    whose own centre is sample ``size // 2``, and places it with upper-left corner
    ``ul = int(centre - 3*sigma)`` and lower-right end ``br = int(centre + 3*sigma + 1)``
    (exclusive). Python's int() truncates toward zero, so for ``centre - 3*sigma`` negative
    and non-integral it is a ceil, not a floor: with sigma 1.5, centre 0..4 gives ul one larger
    than floor would and the drawn peak ``ul + size // 2`` lands at centre + 1. For
    centre >= 5 (or integral 3*sigma) the peak is where it was asked for.
    Returns (drawn peak, window lo, window hi) with the same shape as ``centre``, inclusive.
    """
    radius = 3.0 * sigma
    lo = torch.trunc(centre - radius)             # int(): truncation toward zero
    hi = torch.floor(centre + radius + 1.0) - 1   # br is computed from a positive value
    peak = lo + math.floor((2 * radius + 1) / 2)  # size // 2 on the float size
    return peak, lo.long(), hi.long()


def stitch_mosaic(reads: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Lay the k x k logits of a square of pixels side by side: reads (B, N, M, k, k) of the
    M = (2R+1)^2 pixels in row-major order from (-R, -R), valid (B, N, M) bool -> (B, N, G, G),
    G = (2R+1)k; cells of pixels off the map get a logit no softmax picks."""
    b, n, m, k, _ = reads.shape
    side = math.isqrt(m)
    reads = reads.masked_fill(~valid[..., None, None], -1e4)
    grid = reads.reshape(b, n, side, side, k, k).permute(0, 1, 2, 4, 3, 5)
    return grid.reshape(b, n, side * k, side * k)


def read_decimal_maps(decimals: torch.Tensor | LocalDecimals, ix: torch.Tensor,
                      iy: torch.Tensor) -> torch.Tensor:
    """Each landmark's K x K decimal logits: the published head's (B, N, K, K) as they are;
    the local head's (:class:`LocalDecimals`, or as (B, N, K, K, H, W) maps) read at integer
    pixels ix, iy of shape (B, N) -> (B, N, K, K), or (B, N, M) -> (B, N, M, K, K)."""
    if isinstance(decimals, LocalDecimals):
        return decimals.at(ix, iy)
    if decimals.dim() == 4:
        return decimals
    b, n, k = decimals.shape[:3]
    maps = decimals.flatten(2, 3)                                    # (B, N, K*K, H, W)
    reads = ix.reshape(b, n, 1, -1).expand(b, n, k * k, -1)          # (B, N, K*K, M)
    vals = gather_pixels(maps, reads, iy.reshape(b, n, 1, -1).expand_as(reads))
    return vals.transpose(2, 3).reshape(*ix.shape, k, k)


class HIHCodec(Codec):
    """HIH targets/decoding; see the module docstring for the exact tiling of [0, 1).

    Targets (``encode``):
      heatmaps (B, N, H, W): Gaussian, peak 1, ``sigma``, centred on integer pixel i.
      decimals (B, N, k, k): Gaussian, peak 1, ``decimal_sigma`` cells, centred on cell c.
      decimal_labels (B, N, k*k): soft labels for the CSC loss; "softmax" = softmax over the
        k*k Gaussian values (published; flat: ~0.038 peak, ~0.014 elsewhere for k=8),
        "gaussian" = values / sum (sharper).
      integer (B, N, 2) long: i as (x, y).
    The decimal logits may also be the local head's per-pixel maps (``read_decimal_maps``):
    decode and diagnostics read them at the integer argmax, the loss at the target pixel.
    Score of a decoded landmark: the raw maximum of its last-stack integer heatmap (the
    network has no output activation; ~1 for a confident landmark, like the target peak).
    With ``window`` r > 0 the decimal targets are the training mosaic's, R = 2r, G = (2R+1)k:
    decimals (B, N, G, G), decimal_labels (B, N, G*G), decimal_pixels (B, N, M, 2) long, the
    M = (2R+1)^2 pixels to read (clipped to the map), decimal_valid (B, N, M) bool, on the map.
    """

    def __init__(self, heatmap_size: int = 64, decimal_size: int = 8, sigma: float = 1.5,
                 decimal_sigma: float = 1.0, soft_label: SoftLabel = "softmax",
                 published_compat: bool = False, window: int = 0,
                 decimal_decode: DecimalDecode = "argmax") -> None:
        if soft_label not in _SOFT_LABELS:
            raise ValueError(f"soft_label must be one of {_SOFT_LABELS}, got {soft_label!r}")
        if decimal_decode not in get_args(DecimalDecode):
            raise ValueError(f"decimal_decode must be one of {get_args(DecimalDecode)}, got "
                             f"{decimal_decode!r}")
        if decimal_decode != "argmax" and (published_compat or not window):
            raise ValueError("decimal_decode='expectation' needs window >= 1 and no "
                             "published_compat: a map cut at its pixel's border (window 0) "
                             "pulls the mean toward the pixel centre, by up to a cell; decode "
                             "those with decimal_decode='argmax' (model.codec.decimal_decode)")
        if decimal_size < 1 or heatmap_size < 1:
            raise ValueError("heatmap_size and decimal_size must be positive")
        if window < 0 or (window and published_compat):
            raise ValueError(f"window must be >= 0, and 0 with published_compat; got {window}")
        self.heatmap_size = int(heatmap_size)
        self.decimal_size = int(decimal_size)
        self.sigma = float(sigma)
        self.decimal_sigma = float(decimal_sigma)
        self.soft_label = soft_label
        self.published_compat = bool(published_compat)
        self.window = int(window)
        self.decimal_decode = decimal_decode

    def __repr__(self) -> str:
        return (f"HIHCodec(heatmap_size={self.heatmap_size}, decimal_size={self.decimal_size}, "
                f"sigma={self.sigma}, decimal_sigma={self.decimal_sigma}, "
                f"soft_label={self.soft_label!r}, published_compat={self.published_compat}, "
                f"window={self.window}, decimal_decode={self.decimal_decode!r})")

    @property
    def window_cells(self) -> int:
        """K, the decoded mosaic's cells per axis: (2 * window + 1) * k."""
        return (2 * self.window + 1) * self.decimal_size

    # -- encode ---------------------------------------------------------------------------
    def decimal_class(self, frac: torch.Tensor) -> torch.Tensor:
        """Per-axis decimal cell (long) of fractions in [0, 1); k only in published mode."""
        k = self.decimal_size
        if self.published_compat:
            return torch.floor(frac * k + 0.5).long()  # round(f*k), half up; may equal k
        return torch.floor(frac * k).long().clamp_(0, k - 1)

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets for landmarks (B, N, 2) in heatmap units; keys in the class docstring."""
        size, k = self.heatmap_size, self.decimal_size
        integer, frac = split_integer(landmarks, size)
        cell = self.decimal_class(frac)
        if self.published_compat:
            peak, lo, hi = published_window(integer.float(), self.sigma)
            heatmaps = render_gaussians(peak, size, size, self.sigma, lo=lo, hi=hi)
            dpeak, dlo, dhi = published_window(cell.float(), self.decimal_sigma)
            decimals = render_gaussians(dpeak, k, k, self.decimal_sigma, lo=dlo, hi=dhi)
        else:
            heatmaps = render_gaussians(integer, size, size, self.sigma)
            decimals = render_gaussians(cell, k, k, self.decimal_sigma)
        targets = {"heatmaps": heatmaps, "integer": integer}
        off_map = None
        if self.window:
            reach = 2 * self.window
            pixels, valid = window_pixels(integer, reach, size)
            side = (2 * reach + 1) * k
            decimals = render_gaussians(reach * k + cell, side, side, self.decimal_sigma)
            off_map = stitch_mosaic(decimals.new_zeros(*valid.shape, k, k), valid) < 0
            targets["decimal_pixels"], targets["decimal_valid"] = pixels, valid
        flat = decimals.flatten(-2)
        if off_map is not None:  # no label mass on mosaic cells off the map
            flat = flat.masked_fill(off_map.flatten(-2), -math.inf if self.soft_label == "softmax"
                                    else 0.0)
            decimals = flat.clamp_min(0).reshape(decimals.shape)
        if self.soft_label == "softmax":
            labels = torch.softmax(flat, dim=-1)
        else:
            labels = flat / flat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return {**targets, "decimals": decimals, "decimal_labels": labels}

    def ideal_output(self, landmarks: torch.Tensor) -> NetOutput:
        """Perfect output; with a window, the decimal map as read at the true pixel."""
        out = super().ideal_output(landmarks)
        if self.window and out.decimals is not None:
            # the mosaic of radius 2r cut to the decode window of radius r around the truth
            cut = self.window * self.decimal_size
            out.decimals = out.decimals[..., cut:-cut, cut:-cut]
        if self.decimal_decode == "expectation" and out.decimals is not None:
            # logits whose softmax is the normalised Gaussian label, symmetric about the cell
            out.decimals = out.decimals.clamp_min(1e-12).log()
        return out

    # -- decode ---------------------------------------------------------------------------
    def decode(self, output: NetOutput) -> Decoded:
        """Integer argmax of the last stack + the decimal heatmap's argmax cell, or with
        ``decimal_decode="expectation"`` its softmax-weighted mean cell centre."""
        if output.decimals is None:
            raise ValueError("HIHCodec.decode needs output.decimals (the HIH decimal head)")
        ix, iy, score = flat_argmax(output.heatmaps[:, -1])
        k = self.decimal_size
        if self.decimal_decode == "expectation":
            decimals = self._read_checked(output, ix, iy)
            prob = torch.softmax(decimals.flatten(-2).float(), dim=-1).view(decimals.shape)
            centres = (torch.arange(decimals.shape[-1], device=decimals.device) + 0.5) / k
            dx = (prob.sum(dim=-2) * centres).sum(dim=-1) - self.window
            dy = (prob.sum(dim=-1) * centres).sum(dim=-1) - self.window
            landmarks = torch.stack((ix.float() + dx, iy.float() + dy), dim=-1)
            return Decoded(landmarks=landmarks, scores=score)
        cx, cy, dval = self._decimal_argmax(output, ix, iy)
        if self.published_compat:
            keep = (dval.float() > 0).float()  # the published silent drop when all logits <= 0
            dx, dy = cx / k * keep, cy / k * keep
        else:
            dx, dy = (cx + 0.5) / k - self.window, (cy + 0.5) / k - self.window
        landmarks = torch.stack((ix.float() + dx, iy.float() + dy), dim=-1)
        return Decoded(landmarks=landmarks, scores=score)

    def _decimal_argmax(self, output: NetOutput, ix: torch.Tensor, iy: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decimal map read at (ix, iy): its argmax cell (x, y) as long and its logit."""
        decimals = self._read_checked(output, ix, iy)
        big = decimals.shape[-1]
        dval, didx = decimals.flatten(-2).max(dim=-1)
        return didx % big, didx // big, dval

    def _read_checked(self, output: NetOutput, ix: torch.Tensor, iy: torch.Tensor
                      ) -> torch.Tensor:
        """``read_window`` at (ix, iy), refusing a head whose K disagrees with the codec's."""
        decimals = self.read_window(output.decimals, ix, iy)
        big = decimals.shape[-1]
        if big != self.window_cells:
            raise ValueError(f"decimal logits are {big} x {big}, but decimal_size="
                             f"{self.decimal_size} and window={self.window} need "
                             f"{self.window_cells} x {self.window_cells}: model.net.decimal_size "
                             "and the codec's disagree")
        return decimals

    def read_window(self, decimals: torch.Tensor | LocalDecimals, ix: torch.Tensor,
                    iy: torch.Tensor) -> torch.Tensor:
        """The K x K decimal logits the decode reads at integer pixels ix, iy (B, N): the head's
        map there, or with a window the k x k maps of the window's pixels side by side (a
        (B, N, K, K) tensor, the published head's or an ideal output, is taken as it is)."""
        if not self.window or (torch.is_tensor(decimals) and decimals.dim() == 4):
            return read_decimal_maps(decimals, ix, iy)
        pixels, valid = window_pixels(torch.stack((ix, iy), dim=-1), self.window,
                                      self.heatmap_size)
        return stitch_mosaic(read_decimal_maps(decimals, pixels[..., 0], pixels[..., 1]), valid)

    def diagnostics(self, output: NetOutput, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Is the decimal head earning its keep? Compared with the truth ``landmarks``.

        ``decimal_hit`` (B, N) bool: the decoded decimal cell is the true one on both axes
        (chance is 1 / k^2; with a window, the cell within its pixel, whichever pixel).
        ``integer_centre`` (B, N, 2): the decode with the decimal head replaced by the pixel
        centre, i.e. what an integer-only HIH would predict. HIH is only
        better than that when the decimal head beats a constant guess.
        """
        ix, iy, _ = flat_argmax(output.heatmaps[:, -1])
        cx, cy, _ = self._decimal_argmax(output, ix, iy)
        k = self.decimal_size
        _, frac = split_integer(landmarks, self.heatmap_size)
        cell = self.decimal_class(frac)
        hit = (cx % k == cell[..., 0]) & (cy % k == cell[..., 1])
        centre = torch.stack((ix.float(), iy.float()), dim=-1) + 0.5
        return {"decimal_hit": hit, "integer_centre": centre}
