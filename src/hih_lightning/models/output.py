"""What every network in this project returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NetOutput:
    """Raw network outputs; codecs decode these, losses compare them with targets.

    heatmaps: (B, S, N, H, W) every stack's integer heatmap, no activation.
    decimals: decimal logits: (B, N, k, k) from the published HIH head, or (B, N, k, k, H, W)
        from the local head (one k x k map per pixel, read at the integer pixel).
    offsets: sub-pixel offsets of the alternative heads, in heatmap pixels: (B, N, 2) from
        the FC regression head, or (B, N, 2, H, W) offset maps read at the integer argmax.
    simcc: (B, N, 2, bins) x and y classification logits of the SimCC head.
    """

    heatmaps: torch.Tensor
    decimals: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    simcc: torch.Tensor | None = None
