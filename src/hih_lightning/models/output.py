"""What every network in this project returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LocalDecimals:
    """The local decimal head's output, kept as features: logits are computed where read.

    A 1x1 conv to N*k*k logits at every pixel costs N*k*k*C MACs per pixel (1.1 GMACs of
    the 1.5 of ``hih_cpu`` at 128 px), yet the loss reads one pixel per landmark (the true
    one) and decoding one (the argmax). :meth:`at` applies the same 1x1 weights to the
    gathered feature only, which is exactly the conv's value there; :meth:`maps` computes
    every pixel (for tests and pictures).

    features (B, C, H, W); weight (N, k*k, C) and bias (N, k*k): the 1x1 conv's parameters.
    """

    features: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def decimal_size(self) -> int:
        return round(self.weight.shape[1] ** 0.5)

    def at(self, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        """Logits of landmark n at integer pixels (ix, iy) inside the map: (B, N) pixels give
        (B, N, k, k); (B, N, M) pixels (M reads per landmark) give (B, N, M, k, k)."""
        b, c, _, w = self.features.shape
        reads = ix.reshape(b, ix.shape[1], -1)                            # (B, N, M)
        idx = (iy.reshape(reads.shape) * w + reads).reshape(b, 1, -1).expand(b, c, -1)
        picked = torch.gather(self.features.flatten(2), 2, idx)           # (B, C, N*M)
        picked = picked.reshape(b, c, *reads.shape[1:])                   # (B, C, N, M)
        logits = torch.einsum("bcnm,nkc->bnmk", picked, self.weight) + self.bias[:, None]
        k = self.decimal_size
        return logits.reshape(*ix.shape, k, k)

    def maps(self) -> torch.Tensor:
        """Every pixel's logits, (B, N, k, k, H, W)."""
        b, _, h, w = self.features.shape
        k = self.decimal_size
        logits = torch.einsum("bchw,nkc->bnkhw", self.features, self.weight)
        return (logits + self.bias[..., None, None]).reshape(b, -1, k, k, h, w)


@dataclass
class NetOutput:
    """Raw network outputs; codecs decode these, losses compare them with targets.

    heatmaps: (B, S, N, H, W) every stack's integer heatmap, no activation.
    decimals: decimal logits: (B, N, k, k) from the published HIH head, or the local head's
        k x k map per pixel, read at the integer pixel: :class:`LocalDecimals` (what the head
        returns) or the same as a (B, N, k, k, H, W) tensor (e.g. a codec's ideal output).
    offsets: sub-pixel offsets of the alternative heads, in heatmap pixels: (B, N, 2) from
        the FC regression head, or (B, N, 2, H, W) offset maps read at the integer argmax.
    simcc: (B, N, 2, bins) x and y classification logits of the SimCC head.
    """

    heatmaps: torch.Tensor
    decimals: torch.Tensor | LocalDecimals | None = None
    offsets: torch.Tensor | None = None
    simcc: torch.Tensor | None = None
