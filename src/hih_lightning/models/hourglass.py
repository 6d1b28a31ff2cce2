"""Stacked hourglass backbone (Newell et al.) as HIH uses it (HIH_SPEC section 3)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """Bias-free convolution + BatchNorm (+ ReLU): the building brick of every block."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1,
                 relu: bool = True) -> None:
        layers: dict[str, nn.Module] = {
            "conv": nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=False),
            "bn": nn.BatchNorm2d(out_ch),
        }
        if relu:
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(OrderedDict(layers))


class Residual(nn.Module):
    """Post-activation bottleneck: 1x1 (C/2) -> 3x3 (C/2) -> 1x1 (C), skip, ReLU after the sum.

    The projection skip exists only when the widths differ. The authors also build it when
    they match and never call it; we don't (unused parameters break DDP), but
    ``unused_published_parameters`` reports what their count adds.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.conv1 = ConvBN(in_ch, mid, 1)
        self.conv2 = ConvBN(mid, mid, 3)
        self.conv3 = ConvBN(mid, out_ch, 1, relu=False)
        self.skip = ConvBN(in_ch, out_ch, 1, relu=False) if in_ch != out_ch else None
        self.in_ch, self.out_ch = in_ch, out_ch

    @property
    def unused_published_parameters(self) -> int:
        """Parameters of the never-used skip conv + BN the published code builds here."""
        if self.skip is not None:
            return 0
        return self.in_ch * self.out_ch + 2 * self.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.skip is None else self.skip(x)
        # In place: BN's backward does not read its output, nor ReLU's its input, so the sum
        # and the ReLU reuse conv3's buffer (same arithmetic; ~2 % of a CPU step).
        return F.relu_(self.conv3(self.conv2(self.conv1(x))).add_(identity))


class Hourglass(nn.Module):
    """One hourglass level; recursion builds ``depth`` levels (64 -> 32 -> 16 -> 8 -> 4)."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.up = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner: nn.Module = (Hourglass(depth - 1, channels) if depth > 1
                                 else Residual(channels, channels))
        self.out = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.out(self.inner(self.down(F.max_pool2d(x, 2))))
        low = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return low.add_(self.up(x))  # upsampling's backward does not read its output


class Stem(nn.Module):
    """conv7x7/2 -> Residual -> maxpool/2 -> Residual -> Residual: input / 4, ``channels`` wide."""

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        half = channels // 2
        self.conv = ConvBN(3, 64, 7, stride=2)
        self.res1 = Residual(64, half)
        self.res2 = Residual(half, half)
        self.res3 = Residual(half, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1(self.conv(x))
        return self.res3(self.res2(F.max_pool2d(x, 2)))


class Stack(nn.Module):
    """hourglass -> Residual -> 1x1 feature -> 1x1 heatmap; the merge feeds the next stack."""

    def __init__(self, depth: int, channels: int, num_landmarks: int) -> None:
        super().__init__()
        self.hourglass = Hourglass(depth, channels)
        self.res = Residual(channels, channels)
        self.feature = ConvBN(channels, channels, 1)
        self.predict = nn.Conv2d(channels, num_landmarks, 1)
        self.merge_feature = ConvBN(channels, channels, 1)
        self.merge_heatmap = ConvBN(num_landmarks, channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.feature(self.res(self.hourglass(x)))
        heatmap = self.predict(feature)
        # The merge runs after every stack, the last one included: the decimal head reads it.
        return x + self.merge_feature(feature) + self.merge_heatmap(heatmap), heatmap
