"""SimCC: each coordinate classified on its own 1-D axis of sub-pixel bins (as in RTMPose).

Where HIH splits a coordinate into an integer heatmap pixel and a k x k decimal cell, SimCC
classifies x and y separately into ``input_size * split_ratio`` bins: bin b sits at input
pixel b / split_ratio, so the quantization is half a bin (a quarter input pixel at the usual
split ratio 2) without a 2-D map at that resolution. Labels are a 1-D Gaussian per axis,
normalised to sum 1, for a KL loss (``losses.simcc_kl``); decoding is the argmax bin.

The backbone's stacks still get their integer-heatmap targets (intermediate supervision, the
same as for every other codec here), rendered at the exact sub-pixel position.
"""

from __future__ import annotations

import torch

from hih_lightning.codecs.base import Codec, Decoded
from hih_lightning.codecs.gaussian import render_gaussians, working_dtype
from hih_lightning.models.output import NetOutput


class SimCCCodec(Codec):
    """Targets {"heatmaps" (B,N,H,W), "simcc_labels" (B,N,2,bins)}; decode from ``simcc``.

    Coordinates are in heatmap units; one heatmap pixel is ``stride`` input pixels, so there
    are ``bins_per_pixel = stride * split_ratio`` bins per heatmap pixel and
    ``heatmap_size * bins_per_pixel`` bins per axis. ``label_sigma`` is in heatmap pixels.
    Score: the smaller of the two axes' peak probabilities. Bin b sits at b / bins_per_pixel,
    so the last bin is at heatmap_size - 1 / bins_per_pixel: positions beyond it by more than
    half a bin (the last 1/16 heatmap px at the default ratio) decode to the last bin.
    """

    def __init__(self, heatmap_size: int = 64, split_ratio: float = 2.0, stride: int = 4,
                 sigma: float = 1.5, label_sigma: float = 0.5) -> None:
        self.heatmap_size = int(heatmap_size)
        self.split_ratio, self.stride = float(split_ratio), int(stride)
        self.sigma, self.label_sigma = float(sigma), float(label_sigma)
        self.bins_per_pixel = self.stride * self.split_ratio
        self.bins = round(self.heatmap_size * self.bins_per_pixel)

    def __repr__(self) -> str:
        return (f"SimCCCodec(heatmap_size={self.heatmap_size}, split_ratio={self.split_ratio}, "
                f"stride={self.stride}, sigma={self.sigma}, label_sigma={self.label_sigma})")

    def encode(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sub-pixel integer-heatmap targets and the normalised 1-D Gaussian labels."""
        p = landmarks.to(working_dtype(landmarks))
        size = self.heatmap_size
        centre = p * self.bins_per_pixel                                 # (B, N, 2) in bins
        bins = torch.arange(self.bins, device=p.device, dtype=p.dtype)
        sigma = self.label_sigma * self.bins_per_pixel
        logits = -0.5 * ((bins - centre.unsqueeze(-1)) / sigma).square()  # (B, N, 2, bins)
        return {"heatmaps": render_gaussians(p, size, size, self.sigma),
                "simcc_labels": torch.softmax(logits, dim=-1).float()}

    def ideal_output(self, landmarks: torch.Tensor) -> NetOutput:
        """A perfect SimCC head: logits whose softmax is the label (log of the label)."""
        targets = self.encode(landmarks)
        return NetOutput(heatmaps=targets["heatmaps"].unsqueeze(1),
                         simcc=targets["simcc_labels"].clamp_min(1e-30).log())

    def decode(self, output: NetOutput) -> Decoded:
        """Argmax bin per axis, in heatmap units."""
        if output.simcc is None:
            raise ValueError("SimCCCodec.decode needs output.simcc (the SimCC head)")
        prob, idx = torch.softmax(output.simcc.float(), dim=-1).max(dim=-1)   # (B, N, 2)
        return Decoded(landmarks=idx.float() / self.bins_per_pixel,
                       scores=prob.amin(dim=-1))
