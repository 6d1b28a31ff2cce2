"""HIHNet: stacked hourglass + a sub-pixel head, and the named variants."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import nn

from hih_lightning.models.heads import (
    DecimalHead,
    FCOffsetHead,
    LocalDecimalHead,
    OffsetMapHead,
    SimCCHead,
)
from hih_lightning.models.hourglass import Residual, Stack, Stem
from hih_lightning.models.output import NetOutput

Head = Literal["hih", "hih_local", "fc", "offset_map", "simcc", "none"]
HEADS = get_args(Head)


class HIHNet(nn.Module):
    """Stem -> ``num_stacks`` hourglass stacks -> sub-pixel head on the last merged feature.

    ``head``: "hih" (decimal heatmap, the method), "hih_local" (a k x k decimal map at every
    pixel, ``local_channels`` wide), "fc" (FC offset regression), "offset_map"
    (CenterNet-style offset maps), "simcc" (1-D x/y classification into
    input_size * split_ratio bins) or "none" (integer heatmaps only).
    """

    def __init__(self, num_stacks: int = 4, num_landmarks: int = 98, decimal_size: int = 8,
                 channels: int = 256, depth: int = 4, decimal_channels: int = 384,
                 input_size: int = 256, head: Head = "hih", local_channels: int = 128,
                 split_ratio: float = 2.0) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
        self.heatmap_size = input_size // 4
        self.num_landmarks, self.decimal_size, self.head_type = num_landmarks, decimal_size, head
        self.depth = depth
        self.stem = Stem(channels)
        self.stacks = nn.ModuleList(Stack(depth, channels, num_landmarks)
                                    for _ in range(num_stacks))
        self.head: nn.Module | None = None
        if head == "hih":
            self.head = DecimalHead(channels, num_landmarks, self.heatmap_size, decimal_size,
                                    decimal_channels)
        elif head == "hih_local":
            self.head = LocalDecimalHead(channels, num_landmarks, decimal_size, local_channels)
        elif head == "simcc":
            self.head = SimCCHead(channels, num_landmarks, self.heatmap_size,
                                  round(input_size * split_ratio))
        elif head == "fc":
            self.head = FCOffsetHead(channels, num_landmarks, self.heatmap_size, decimal_size,
                                     decimal_channels)
        elif head == "offset_map":
            self.head = OffsetMapHead(channels, num_landmarks, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Published init: conv/linear weights ~ N(0, 0.001), BN weight 1 / bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> NetOutput:
        x = self.stem(images)
        heatmaps = []
        for stack in self.stacks:
            x, heatmap = stack(x)
            heatmaps.append(heatmap)
        out = NetOutput(heatmaps=torch.stack(heatmaps, dim=1))
        if self.head_type in ("hih", "hih_local"):
            out.decimals = self.head(x)
        elif self.head_type == "simcc":
            out.simcc = self.head(x)
        elif self.head is not None:
            out.offsets = self.head(x)
        return out


VARIANTS: dict[str, dict[str, Any]] = {
    "hih_t": {"num_stacks": 1},
    "hih_s": {"num_stacks": 2},
    "hih_b": {"num_stacks": 4},
    # CPU-size model for the embedded default: 128 px input -> 32x32 heatmaps, narrower,
    # one level shallower so the innermost map stays 4x4.
    "hih_cpu": {"num_stacks": 1, "channels": 128, "depth": 3, "decimal_channels": 128,
                "input_size": 128},
}


def build_model(variant: str, num_landmarks: int = 98, decimal_size: int = 8,
                **overrides: Any) -> HIHNet:
    """Build a named variant (``hih_t``/``hih_s``/``hih_b``/``hih_cpu``); kwargs override it."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    kwargs = {**VARIANTS[variant], **overrides}
    return HIHNet(num_landmarks=num_landmarks, decimal_size=decimal_size, **kwargs)


build_model.forwards_kwargs_to = HIHNet  # config validation checks overrides against HIHNet


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters the network uses, and the published total that adds the unused skip convs."""
    used = sum(p.numel() for p in model.parameters())
    unused = sum(m.unused_published_parameters for m in model.modules()
                 if isinstance(m, Residual))
    return {"used": used, "published": used + unused}
