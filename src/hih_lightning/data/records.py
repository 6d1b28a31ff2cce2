"""The one in-memory record every annotation reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class FaceRecord:
    """One annotated face, in original-image pixels with 0-based coordinates.

    Readers convert their format's convention (e.g. 1-based ``.pts``) exactly once, so a
    record's ``landmarks`` always mean "pixel centre of column x, row y" with (0, 0) the
    centre of the top-left pixel.
    """

    image_path: Path | None
    landmarks: np.ndarray  # (N, 2) float64, image pixels, 0-based
    box: np.ndarray | None = None  # (4,) x1, y1, x2, y2 from the dataset (detector rect)
    center: np.ndarray | None = None  # (2,) dataset centre for the center_scale protocol
    scale: float | None = None  # dataset box side / 200 for the center_scale protocol
    attributes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    visible: np.ndarray | None = None  # (N,) bool, False where annotated as occluded
    source: str = ""  # "file:line" (or key) the record came from, for error messages

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, dtype=np.float64)
        if self.landmarks.ndim != 2 or self.landmarks.shape[1] != 2:
            raise ValueError(f"{self.source}: landmarks must be (N, 2), got {self.landmarks.shape}")
        if not np.isfinite(self.landmarks).all():
            raise ValueError(f"{self.source}: landmarks contain NaN or inf")
