"""Figures people would rather look at than tables: CED curves and prediction grids."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hih_lightning.metrics import ced_curve  # noqa: E402


def plot_ced(errors: Mapping[str, np.ndarray], path: Path, threshold: float = 0.1,
             title: str = "Cumulative error distribution") -> Path:
    """One CED curve per entry of ``errors`` (per-image NME, fractions), up to ``threshold``."""
    import torch

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, values in errors.items():
        grid, fraction = ced_curve(torch.as_tensor(np.asarray(values, dtype=np.float64)),
                                   threshold)
        ax.plot(grid.numpy() * 100, fraction.numpy() * 100, label=name)
    ax.set(xlabel="NME (%)", ylabel="images (%)", xlim=(0, threshold * 100), ylim=(0, 100),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_landmark_grid(images: np.ndarray, preds: np.ndarray, targets: np.ndarray, path: Path,
                       columns: int = 4) -> Path:
    """Crops (B, H, W, 3) uint8 with ground truth (green) and predictions (red), crop px."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, target in zip(axes.flat, images, preds, targets, strict=False):
        ax.imshow(image)
        ax.scatter(target[:, 0], target[:, 1], s=3, c="lime", linewidths=0)
        ax.scatter(pred[:, 0], pred[:, 1], s=3, c="red", linewidths=0)
    fig.suptitle("ground truth (green) vs prediction (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
