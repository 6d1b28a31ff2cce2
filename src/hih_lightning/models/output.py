"""What every network in this project returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NetOutput:
    """Raw network outputs; codecs decode these, losses compare them with targets.

    heatmaps: (B, S, N, H, W) every stack's integer heatmap, no activation.
    decimals: (B, N, k, k) decimal logits of the HIH head (None for other heads).
    offsets: sub-pixel offsets of the alternative heads, in heatmap pixels: (B, N, 2) from
        the FC regression head, or (B, N, 2, H, W) offset maps read at the integer argmax.
    """

    heatmaps: torch.Tensor
    decimals: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
