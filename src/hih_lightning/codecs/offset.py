"""Integer heatmap + regressed fractional offset: the alternative decimal heads of HIH's study.

Same integer part as HIH (Gaussian on i = clip(floor(p), 0, H-1)); the fraction f = p - i in
[0, 1) is regressed instead of classified, either by an FC head, (B, N, 2), or by
CenterNet-style offset maps, (B, N, 2, H, W), read at the argmax pixel.
"""

from __future__ import annotations

import torch

from hih_lightning.codecs.base import Codec, Decoded
from hih_lightning.codecs.gaussian import (
    flat_argmax,
    gather_pixels,
    render_gaussians,
    split_integer,
)
from hih_lightning.models.output import NetOutput


def read_offset_maps(maps: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """(B, N, 2, H, W) offset maps read at integer pixels (B, N) -> (B, N, 2) float32."""
    xs = ix.unsqueeze(-1).expand(*ix.shape, 2).unsqueeze(-1)
    ys = iy.unsqueeze(-1).expand(*iy.shape, 2).unsqueeze(-1)
    return gather_pixels(maps, xs, ys).squeeze(-1)


class OffsetCodec(Codec):
    """Targets {"heatmaps" (B,N,H,W), "offsets" (B,N,2) f in [0,1), "integer" (B,N,2) long}.

    decode: argmax i of the last stack + offsets, which may be (B, N, 2) (used directly) or
    (B, N, 2, H, W) maps (read at the argmax pixel).
    ``ideal_output`` gives (B, N, 2) offsets by default (cheap, and the FC head's format);
    with ``offset_maps=True`` it gives maps, each constant at the target offset (a stride-0
    expanded view, so no extra memory), i.e. a perfect CenterNet-style head.
    """

    def __init__(self, heatmap_size: int = 64, sigma: float = 1.5,
                 offset_maps: bool = False) -> None:
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        self.offset_maps = bool(offset_maps)

    def __repr__(self) -> str:
        return (f"OffsetCodec(heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
                f"offset_maps={self.offset_maps})")

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Integer Gaussian targets, fractional offsets and the integer pixel."""
        size = self.heatmap_size
        integer, frac = split_integer(landmarks, size)
        return {"heatmaps": render_gaussians(integer, size, size, self.sigma),
                "offsets": frac.float(), "integer": integer}

    def ideal_output(self, landmarks: torch.Tensor) -> NetOutput:
        """Perfect output; offsets as (B, N, 2), or as constant maps if ``offset_maps``."""
        out = super().ideal_output(landmarks)
        if self.offset_maps and out.offsets is not None:
            size = self.heatmap_size
            out.offsets = out.offsets[..., None, None].expand(*out.offsets.shape, size, size)
        return out

    def decode(self, output: NetOutput) -> Decoded:
        """argmax + offset (read at the argmax pixel when offsets are maps)."""
        if output.offsets is None:
            raise ValueError("OffsetCodec.decode needs output.offsets (an offset head)")
        ix, iy, score = flat_argmax(output.heatmaps[:, -1])
        off = output.offsets
        if off.dim() == 5:
            off = read_offset_maps(off, ix, iy)
        elif off.dim() != 3 or off.shape[-1] != 2:
            raise ValueError(f"offsets must be (B, N, 2) or (B, N, 2, H, W), got {off.shape}")
        pts = torch.stack((ix.float(), iy.float()), dim=-1) + off.float()
        return Decoded(pts, score)
