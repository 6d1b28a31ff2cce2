"""Figures people would rather look at than tables: CED curves, prediction grids, bar charts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def plot_grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float | None]],
                      path: Path, ylabel: str, title: str = "") -> Path:
    """One group of bars per entry of ``groups``, one bar per series, value printed on top
    (the layout of the paper's Fig. 4); None values leave a gap."""
    count = max(1, len(series))
    width = 0.8 / count
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(groups) * max(2, count) / 2, 4.6),
                           dpi=120)
    for i, (name, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else float(v) for v in values])
        bars = ax.bar(x + (i - (count - 1) / 2) * width, heights, width, label=name)
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.2f}" for h in heights],
                     fontsize=7, padding=1)
    ax.set_xticks(x, list(groups))
    ax.set(ylabel=ylabel, title=title)
    ax.margins(y=0.1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_mean_std_bars(labels: Sequence[str],
                       series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                       path: Path, title: str = "") -> Path:
    """One panel per metric (``series``: name -> (means, stds)): a bar with an error bar for
    each setting in ``labels``; the hih-report figure of an ablation over seeds."""
    fig, axes = plt.subplots(1, len(series), figsize=(max(4.0, 0.9 * len(labels)) * len(series)
                                                       / 1.6, 3.6), dpi=120, squeeze=False)
    positions = np.arange(len(labels))
    for ax, (name, (means, stds)) in zip(axes.flat, series.items(), strict=True):
        ax.bar(positions, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
