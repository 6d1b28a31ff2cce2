"""The encode/decode contract shared by every landmark representation.

One codec object owns both directions so the targets a network is trained on and the way its
output is read back can never drift apart (mmpose's codec idea). Everything is batched torch
and runs on whatever device the landmarks / outputs are on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from hih_lightning.models.output import NetOutput


@dataclass
class Decoded:
    """Decoded landmarks in heatmap units, (B, N, 2), and a per-landmark confidence (B, N)."""

    landmarks: torch.Tensor
    scores: torch.Tensor


class Codec(ABC):
    """Landmarks in heatmap units (B, N, 2) <-> training targets / network outputs."""

    heatmap_size: int

    @abstractmethod
    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Make the training targets for landmarks given in heatmap units, (B, N, 2)."""

    @abstractmethod
    def decode(self, output: NetOutput) -> Decoded:
        """Read landmarks (heatmap units) from a network output (last stack)."""

    def ideal_output(self, landmarks: torch.Tensor) -> NetOutput:
        """The output a perfect network would produce: encode, then shape as a NetOutput.

        ``decode(ideal_output(x))`` measures the representation's quantization floor.
        """
        targets = self.encode(landmarks)
        return NetOutput(heatmaps=targets["heatmaps"].unsqueeze(1),
                         decimals=targets.get("decimals"), offsets=targets.get("offsets"))
