"""Integer heatmap + regressed fractional offset: the alternative decimal heads of HIH's study.

Same integer part as HIH (Gaussian on i = clip(floor(p), 0, H-1)); the fraction f = p - i in
[0, 1) is regressed instead of classified, either by an FC head, (B, N, 2), or by
CenterNet-style offset maps, (B, N, 2, H, W), read at the argmax pixel.

``window=r`` (offset maps only; issue 28's regression counterpart of HIH-local's window,
PIPNet's idea of supervising neighbours): the maps are trained at every pixel within r of the
true pixel, each on the offset from itself to the landmark (p - pixel, up to r + 1 per axis),
pixels off the map left out. The decode is unchanged, argmax + the offset read there, so an
argmax up to r pixels off is pointed back to the landmark. r = 0 supervises the true pixel
alone (CenterNet).

``offset_decode="vote"`` (needs a window) is the counterpart of HIH-local's expectation
decode: every pixel within r of the argmax was trained to point at the landmark, so each
casts its own estimate (pixel + its offset), and the landmark is their mean weighted by the
integer heatmap there (negatives count 0). One pixel's offset carries that pixel's noise
alone; the vote averages it over the pixels the network believes in.
"""

from __future__ import annotations

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
from hih_lightning.models.output import NetOutput

OffsetDecode = Literal["pixel", "vote"]


def read_offset_maps(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """(B, N, 2, H, W) offset maps read at integer pixels (B, N) or (B, N, M) -> (B, N, 2) or
    (B, N, M, 2) float32."""
    b, n = ix.shape[:2]
    xs = ix.reshape(b, n, 1, -1).expand(b, n, 2, -1)
    ys = iy.reshape(b, n, 1, -1).expand(b, n, 2, -1)
    return gather_pixels(maps, xs, ys).movedim(2, -1).reshape(*ix.shape, 2)


class OffsetCodec(Codec):
    """Targets {"heatmaps" (B,N,H,W), "offsets" (B,N,2) f in [0,1), "integer" (B,N,2) long};
    with a window, "offsets" (B,N,M,2) p - pixel at "offset_pixels" (B,N,M,2) long, M =
    (2r+1)^2 pixels around the true one (clipped to the map), "offset_valid" (B,N,M) on the map.

    decode: argmax i of the last stack + offsets, which may be (B, N, 2) (used directly) or
    (B, N, 2, H, W) maps (read at the argmax pixel; with ``offset_decode="vote"`` the
    heatmap-weighted mean of the window's pixels' own estimates).
    ``ideal_output`` gives (B, N, 2) offsets by default (cheap, and the FC head's format);
    with ``offset_maps=True`` it gives maps, each constant at the target offset (a stride-0
    expanded view, so no extra memory), i.e. a perfect CenterNet-style head; with a window,
    maps holding p - pixel at every pixel (a perfect neighbour-trained head).
    """

    def __init__(self, heatmap_size: int = 64, sigma: float = 1.5,
                 offset_maps: bool = False, window: int = 0,
                 offset_decode: OffsetDecode = "pixel") -> None:
        if int(window) < 0:
            raise ValueError(f"window must be >= 0 pixels, got {window}")
        if offset_decode not in get_args(OffsetDecode):
            raise ValueError(f"offset_decode must be one of {get_args(OffsetDecode)}, got "
                             f"{offset_decode!r} (model.codec.offset_decode)")
        if offset_decode == "vote" and int(window) < 1:
            raise ValueError("offset_decode='vote' needs window >= 1: with window 0 only the "
                             "true pixel's offset is trained, so its neighbours' votes are "
                             "noise (model.codec.offset_decode, model.codec.window)")
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        self.offset_maps = bool(offset_maps) or int(window) > 0
        self.window = int(window)
        self.offset_decode = offset_decode

    def __repr__(self) -> str:
        return (f"OffsetCodec(heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
                f"offset_maps={self.offset_maps}, window={self.window}, "
                f"offset_decode={self.offset_decode!r})")

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Integer Gaussian targets, offsets and the integer pixel (keys in the class doc)."""
        size = self.heatmap_size
        integer, frac = split_integer(landmarks, size)
        targets = {"heatmaps": render_gaussians(integer, size, size, self.sigma),
                   "offsets": frac.float(), "integer": integer}
        if self.window:
            pixels, valid = window_pixels(integer, self.window, size)
            targets["offsets"] = (integer + frac).float().unsqueeze(-2) - pixels
            targets["offset_pixels"], targets["offset_valid"] = pixels, valid
        return targets

    def ideal_output(self, landmarks: torch.Tensor) -> NetOutput:
        """Perfect output; offsets as (B, N, 2), or as maps if ``offset_maps``."""
        out = super().ideal_output(landmarks)
        size = self.heatmap_size
        if self.window:
            integer, frac = split_integer(landmarks, size)
            grid = torch.arange(size, dtype=torch.float32)
            p = (integer + frac).float()[..., None, None]                  # (B, N, 2, 1, 1)
            out.offsets = torch.stack(torch.broadcast_tensors(p[:, :, 0] - grid.view(1, size),
                                                              p[:, :, 1] - grid.view(size, 1)),
                                      dim=2)
        elif self.offset_maps and out.offsets is not None:
            out.offsets = out.offsets[..., None, None].expand(*out.offsets.shape, size, size)
        return out

    def decode(self, output: NetOutput) -> Decoded:
        """argmax + offset (read at the argmax pixel when offsets are maps), or the vote."""
        if output.offsets is None:
            raise ValueError("OffsetCodec.decode needs output.offsets (an offset head)")
        heatmaps = output.heatmaps[:, -1]
        ix, iy, score = flat_argmax(heatmaps)
        off = output.offsets
        if self.offset_decode == "vote":
            if off.dim() != 5:
                raise ValueError(f"offset_decode='vote' needs offset maps (B, N, 2, H, W), "
                                 f"got {tuple(off.shape)}")
            return Decoded(self._vote(heatmaps, off, ix, iy), score)
        if off.dim() == 5:
            off = read_offset_maps(off, ix, iy)
        elif off.dim() != 3 or off.shape[-1] != 2:
            raise ValueError(f"offsets must be (B, N, 2) or (B, N, 2, H, W), got {off.shape}")
        pts = torch.stack((ix.float(), iy.float()), dim=-1) + off.float()
        return Decoded(pts, score)

    def _vote(self, heatmaps: torch.Tensor, maps: torch.Tensor, ix: torch.Tensor,
              iy: torch.Tensor) -> torch.Tensor:
        """Heatmap-weighted mean of pixel + offset over the window around the argmax."""
        pixels, valid = window_pixels(torch.stack((ix, iy), dim=-1), self.window,
                                      heatmaps.shape[-1])               # (B, N, M, 2), (B, N, M)
        px, py = pixels[..., 0], pixels[..., 1]
        weight = gather_pixels(heatmaps, px, py).clamp_min(0) * valid
        centre = weight.shape[-1] // 2
        # a window whose heatmap is all <= 0 falls back to the argmax pixel's own estimate
        weight[..., centre] += (weight.sum(-1) == 0).float()
        votes = pixels.float() + read_offset_maps(maps, px, py)        # (B, N, M, 2)
        return (weight.unsqueeze(-1) * votes).sum(-2) / weight.sum(-1, keepdim=True)
