"""An independent, literal re-implementation of the authors' network for import tests.

Written from HIH_SPEC section 3 with the authors' parameter names (from the layout file),
including the skip convs they build and never use, so a state dict made for it has exactly
the published keys. Test-only: the product code is hih_lightning.models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv(nn.Module):
    def __init__(self, i: int, o: int, k: int = 1, s: int = 1, bn: bool = True,
                 relu: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(i, o, k, s, (k - 1) // 2, bias=bias)
        self.bn = nn.BatchNorm2d(o) if bn else None
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class Res(nn.Module):
    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.conv1 = Conv(i, o // 2)
        self.conv2 = Conv(o // 2, o // 2, 3)
        self.conv3 = Conv(o // 2, o, relu=False)
        self.skip_layer = Conv(i, o, relu=False)  # built always, used only when i != o
        self.need_skip = i != o

    def forward(self, x):
        res = self.skip_layer(x) if self.need_skip else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + res)


class HG(nn.Module):
    """Unrolled depth-4 hourglass with the res{level}_{1,2,3} / res_center naming.

    ``upsample`` holds the interpolation keywords; tests change them to show that the
    import test can see a wrong upsampling.
    """

    def __init__(self, c: int = 256, upsample: dict | None = None) -> None:
        super().__init__()
        for level in (4, 3, 2, 1):
            for role in (1, 2, 3):
                setattr(self, f"res{level}_{role}", Res(c, c))
        self.res_center = Res(c, c)
        self.upsample = upsample or {"mode": "bilinear", "align_corners": True}

    def _level(self, x, level):
        up = getattr(self, f"res{level}_1")(x)
        low = getattr(self, f"res{level}_2")(F.max_pool2d(x, 2))
        low = self._level(low, level - 1) if level > 1 else self.res_center(low)
        low = getattr(self, f"res{level}_3")(low)
        return up + F.interpolate(low, scale_factor=2, **self.upsample)

    def forward(self, x):
        return self._level(x, 4)


class DownOp(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = Conv(c, c, 3, 2)
        self.conv2 = Conv(c, c, 3, relu=False)
        self.downsample = nn.Sequential(Conv(c, c, 1, 2, relu=False))

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class OffsetHead(nn.Module):
    def __init__(self, n: int, blocks: int = 2, c: int = 384) -> None:
        super().__init__()
        self.conv1 = Conv(256, c)
        self.down_ops = nn.ModuleList(DownOp(c) for _ in range(blocks))
        self.head = nn.Sequential(Conv(c, c), nn.Conv2d(c, n, 1))

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 3, 2)
        for op in self.down_ops:
            x = op(x)
        return self.head(x)


class PublishedHIH(nn.Module):
    """``upsample`` and ``head_reads_merged`` exist only so that tests can build the wrong
    networks the import test must tell apart (defaults: the published network)."""

    def __init__(self, num_stack: int = 4, n: int = 98, upsample: dict | None = None,
                 head_reads_merged: bool = True) -> None:
        super().__init__()
        self.num_stack = num_stack
        self.head_reads_merged = head_reads_merged
        self.pre_conv = nn.Sequential(Conv(3, 64, 7, 2), Res(64, 128), nn.MaxPool2d(2),
                                      Res(128, 128), Res(128, 256))
        for s in range(num_stack):
            setattr(self, f"hg{s}", HG(upsample=upsample))
            setattr(self, f"hg{s}_res1", Res(256, 256))
            setattr(self, f"hg{s}_lin1", Conv(256, 256))
            setattr(self, f"hg{s}_conv_pred", nn.Conv2d(256, n, 1))
            setattr(self, f"hg{s}_conv1", Conv(256, 256))
            setattr(self, f"hg{s}_conv2", Conv(n, 256))
        self.offset_head = OffsetHead(n)

    def forward(self, x: torch.Tensor):
        x = self.pre_conv(x)
        preds = []
        for s in range(self.num_stack):
            unmerged = x
            feat = getattr(self, f"hg{s}_lin1")(getattr(self, f"hg{s}_res1")(
                getattr(self, f"hg{s}")(x)))
            pred = getattr(self, f"hg{s}_conv_pred")(feat)
            preds.append(pred)
            x = x + getattr(self, f"hg{s}_conv1")(feat) + getattr(self, f"hg{s}_conv2")(pred)
        return torch.stack(preds, 1), self.offset_head(x if self.head_reads_merged else unmerged)
