"""Sub-pixel heads that read the merged feature after the last stack (HIH_SPEC section 3).

The published HIH head and the FC head are global (one answer per landmark from the whole
map); the offset-map, local-decimal and SimCC heads are the alternatives compared with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hih_lightning.models.hourglass import ConvBN
from hih_lightning.models.output import LocalDecimals


class DownBlock(nn.Module):
    """conv3x3/2 -> conv3x3 with a 1x1/2 projection shortcut: halves the map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(channels, channels, 3, stride=2)
        self.conv2 = ConvBN(channels, channels, 3, relu=False)
        self.shortcut = ConvBN(channels, channels, 1, stride=2, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu_(self.conv2(self.conv1(x)).add_(self.shortcut(x)))  # as in Residual


class DecimalTrunk(nn.Module):
    """1x1 widen -> maxpool 3x3/2 without padding -> down blocks until the map is k x k.

    For a 64x64 heatmap and k = 8: 64 -> 31 -> 16 -> 8, i.e. log2(64/k) - 1 down blocks.
    """

    def __init__(self, in_ch: int, channels: int, heatmap_size: int, decimal_size: int) -> None:
        super().__init__()
        num_blocks = round(math.log2(heatmap_size / decimal_size)) - 1
        size = (heatmap_size - 3) // 2 + 1
        for _ in range(num_blocks):
            size = (size - 1) // 2 + 1
        if num_blocks < 0 or size != decimal_size:
            raise ValueError(f"decimal_size={decimal_size} cannot be reached from a "
                             f"{heatmap_size}x{heatmap_size} heatmap (powers of two, "
                             f"k <= heatmap_size / 4)")
        self.widen = ConvBN(in_ch, channels, 1)
        self.blocks = nn.Sequential(*(DownBlock(channels) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.max_pool2d(self.widen(x), 3, 2))


class DecimalHead(nn.Module):
    """HIH head: one k x k decimal heatmap (raw logits) per landmark."""

    def __init__(self, in_ch: int, num_landmarks: int, heatmap_size: int, decimal_size: int,
                 channels: int = 384) -> None:
        super().__init__()
        self.trunk = DecimalTrunk(in_ch, channels, heatmap_size, decimal_size)
        self.project = ConvBN(channels, channels, 1)
        self.predict = nn.Conv2d(channels, num_landmarks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.project(self.trunk(x)))


class FCOffsetHead(nn.Module):
    """Direct regression of each landmark's fractional offset (x, y) in [0, 1) heatmap px."""

    def __init__(self, in_ch: int, num_landmarks: int, heatmap_size: int, decimal_size: int,
                 channels: int = 384) -> None:
        super().__init__()
        self.trunk = DecimalTrunk(in_ch, channels, heatmap_size, decimal_size)
        self.fc = nn.Linear(channels, 2 * num_landmarks)
        self.num_landmarks = num_landmarks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.trunk(x).mean(dim=(2, 3))
        return self.fc(pooled).view(-1, self.num_landmarks, 2)


class OffsetMapHead(nn.Module):
    """CenterNet-style offsets: a (dx, dy) map per landmark, read at the integer argmax."""

    def __init__(self, in_ch: int, num_landmarks: int, channels: int = 256) -> None:
        super().__init__()
        self.project = ConvBN(in_ch, channels, 1)
        self.predict = nn.Conv2d(channels, 2 * num_landmarks, 1)
        self.num_landmarks = num_landmarks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.predict(self.project(x))
        return maps.view(maps.shape[0], self.num_landmarks, 2, *maps.shape[-2:])


class LocalDecimalHead(nn.Module):
    """HIH-local: every integer pixel carries its own k x k decimal logits for every landmark.

    Two 3x3 conv-BN-ReLU (a 5x5 window of the merged feature) and a 1x1 conv to N*k*k
    logits per pixel, read at the landmark's integer pixel by the loss (ground truth) and the
    codec (argmax). Weights are shared across pixels, so the head is translation-equivariant,
    unlike the published one whose cells see fixed windows of the face. Channels are
    per landmark: at a 16x16 heatmap over half the WFLW landmarks share their integer pixel
    with another one that needs a different cell (``tools/pixel_sharing.py``).
    Returns :class:`LocalDecimals`: the 1x1 conv is evaluated only where the logits are read.
    """

    def __init__(self, in_ch: int, num_landmarks: int, decimal_size: int,
                 channels: int = 128) -> None:
        super().__init__()
        self.local = nn.Sequential(ConvBN(in_ch, channels, 3), ConvBN(channels, channels, 3))
        self.predict = nn.Conv2d(channels, num_landmarks * decimal_size**2, 1)
        self.num_landmarks, self.decimal_size = num_landmarks, decimal_size

    def forward(self, x: torch.Tensor) -> LocalDecimals:
        n, kk = self.num_landmarks, self.decimal_size**2
        weight = self.predict.weight.reshape(n, kk, -1)
        return LocalDecimals(self.local(x), weight, self.predict.bias.reshape(n, kk))


class SimCCHead(nn.Module):
    """SimCC (Li et al., ECCV 2022; RTMPose's head without its GAU): a 1x1 conv gives one map
    per landmark, flattened and classified into ``bins`` x and ``bins`` y positions by one
    linear layer per axis, shared by all landmarks. Output (B, N, 2, bins) logits (x, y).
    """

    def __init__(self, in_ch: int, num_landmarks: int, heatmap_size: int, bins: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_ch, num_landmarks, 1)
        self.x = nn.Linear(heatmap_size * heatmap_size, bins)
        self.y = nn.Linear(heatmap_size * heatmap_size, bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.project(x).flatten(2)                       # (B, N, H*W)
        return torch.stack((self.x(flat), self.y(flat)), dim=2)
