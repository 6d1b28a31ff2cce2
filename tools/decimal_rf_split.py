"""Decimal accuracy of a trained HIH run split by whether the landmark is in the cell's window.

Each output cell (cy, cx) of the published decimal head only sees a window of the merged
feature map (hih_lightning.analysis.receptive_field). For every landmark of the run's test
split this takes its true decimal cell and integer pixel, asks whether the pixel lies inside
the window of that cell, and whether the decimal head picked the cell; it prints the decimal
accuracy of the landmarks inside vs outside their window next to chance (1/k^2). If the
receptive field is why the head stays at chance, "inside" should beat "outside" clearly.

    python tools/decimal_rf_split.py logs/train/runs/<run>     # uses checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import hih_lightning.config  # noqa: F401  (registers the ${div:} resolver)
from hih_lightning.analysis.receptive_field import decimal_cell_windows, inside_window
from hih_lightning.codecs.gaussian import split_integer


def load_run(run: Path, ckpt: str):
    """(config, LightningModule in eval mode with the checkpoint's weights) of a run folder."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(run)
    cfg.data.num_workers = 0
    model = instantiate(cfg.model)
    state = torch.load(run / ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return cfg, model.eval()


def head_windows(head: nn.Module, size: int) -> torch.Tensor:
    """Windows (k, k, 2, 2) of ``head`` on a size x size feature of its own input width."""
    channels = next(m for m in head.modules() if isinstance(m, nn.Conv2d)).in_channels
    return decimal_cell_windows(head, channels, size)


def split_rows(inside: torch.Tensor, hit: torch.Tensor) -> dict[str, tuple[int, float, float]]:
    """{"inside"/"outside"/"all": (landmarks, % of all, decimal accuracy %)} from same-shape
    bool tensors; the accuracy is NaN for an empty row."""
    inside, hit = inside.flatten().bool(), hit.flatten().bool()
    total = inside.numel()
    rows = {}
    for name, mask in (("inside", inside), ("outside", ~inside),
                       ("all", torch.ones_like(inside))):
        count = int(mask.sum())
        acc = 100.0 * hit[mask].float().mean().item() if count else float("nan")
        rows[name] = (count, 100.0 * count / max(total, 1), acc)
    return rows


def markdown_table(rows: dict[str, tuple[int, float, float]], k: int, title: str) -> str:
    lines = [f"| {title} | landmarks | % | decimal acc (%) | chance (%) |",
             "|---|---:|---:|---:|---:|"]
    for name, (count, share, acc) in rows.items():
        lines.append(f"| {name} | {count} | {share:.1f} | {acc:.2f} | {100 / k**2:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with .hydra/config.yaml")
    parser.add_argument("--ckpt", default="checkpoints/last.ckpt")
    args = parser.parse_args()
    cfg, model = load_run(args.run, args.ckpt)
    if cfg.model.net.get("head", "hih") != "hih" or model.net.head is None:
        sys.exit(f"{args.run}: net.head is {cfg.model.net.get('head')!r}; the receptive-field "
                 "split needs the published decimal head (model.net.head=hih)")
    codec, size = model.codec, model.codec.heatmap_size
    windows = head_windows(model.net.head, size)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    inside, hits = [], []
    for batch in datamodule.test_dataloader():
        with torch.no_grad():
            out = model(batch["image"])
        truth = batch["landmarks"] / model.stride
        integer, frac = split_integer(truth, size)
        inside.append(inside_window(windows, codec.decimal_class(frac), integer))
        hits.append(codec.diagnostics(out, truth)["decimal_hit"])
    k = codec.decimal_size
    print(f"windows (x = y) of cells 0..{k - 1} on the {size}x{size} map: "
          + ", ".join(f"{lo}..{hi}" for lo, hi in windows[0, :, 0].tolist()))
    rows = split_rows(torch.cat(inside), torch.cat(hits))
    print(markdown_table(rows, k, f"{args.run.name}, test split, k={k}"))


if __name__ == "__main__":
    main()
