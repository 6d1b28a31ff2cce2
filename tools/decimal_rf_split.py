"""Decimal accuracy of a trained HIH run split by whether the landmark is in the cell's window.

Each output cell (cy, cx) of the published decimal head only sees a window of the merged
feature map (hih_lightning.analysis.receptive_field). For every landmark of the run's test
split this takes its true decimal cell and integer pixel, asks whether the pixel lies inside
the window of that cell, and whether the decimal head picked the cell; it prints the decimal
accuracy of the landmarks inside vs outside their window next to chance (1/k^2). If the
receptive field is why the head stays at chance, "inside" should beat "outside" clearly.
Beware the confound: a head that knows only where the landmark is (not its fraction) and
guesses among the cells whose window holds the pixel also scores 0 outside and above chance
inside; the "position-only guess" column is that baseline's expected accuracy, and
"predicted cell sees pixel" how often the head's own choice is such a cell.

    python tools/decimal_rf_split.py logs/train/runs/<run>     # uses checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from hih_lightning.analysis.receptive_field import decimal_cell_windows, inside_window
from hih_lightning.analysis.runs import load_run
from hih_lightning.codecs.gaussian import split_integer


def head_windows(head: nn.Module, size: int) -> torch.Tensor:
    """Windows (k, k, 2, 2) of ``head`` on a size x size feature of its own input width."""
    channels = next(m for m in head.modules() if isinstance(m, nn.Conv2d)).in_channels
    return decimal_cell_windows(head, channels, size)


def seeing_guess(windows: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    """Hit probability (...,) of a guess uniform over the cells whose window holds ``pixel``
    (..., 2), assuming the true cell is one of them: 1 / (number of such cells). It knows
    where the landmark is and nothing about its fraction (the position-only baseline)."""
    k = windows.shape[0]
    cells = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="xy"), -1)
    sees = inside_window(windows, cells.reshape(-1, 2), pixel[..., None, :])  # (..., k*k)
    return 1.0 / sees.sum(dim=-1).clamp_min(1).float()


def split_rows(inside: torch.Tensor, columns: dict[str, torch.Tensor]
               ) -> dict[str, dict[str, float]]:
    """Rows inside / outside / all of the landmarks (``inside`` bool, any shape): their count,
    share (%) and the mean (%) of each per-landmark column (bool or probability, same shape);
    NaN for an empty row."""
    inside = inside.flatten().bool()
    rows = {}
    for name, mask in (("inside", inside), ("outside", ~inside),
                       ("all", torch.ones_like(inside))):
        count = int(mask.sum())
        row = {"landmarks": float(count), "%": 100.0 * count / max(inside.numel(), 1)}
        for key, values in columns.items():
            picked = values.flatten()[mask].double()
            row[key] = 100.0 * picked.mean().item() if count else float("nan")
        rows[name] = row
    return rows


def markdown_table(rows: dict[str, dict[str, float]], k: int, title: str) -> str:
    keys = list(next(iter(rows.values())))
    lines = [f"| {title} | " + " | ".join(keys) + " | chance 1/k^2 (%) |",
             "|---|" + "---:|" * (len(keys) + 1)]
    for name, row in rows.items():
        cells = [f"{int(v)}" if key == "landmarks" else f"{v:.2f}" for key, v in row.items()]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 / k**2:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with .hydra/config.yaml")
    parser.add_argument("--ckpt", default="checkpoints/last.ckpt")
    args = parser.parse_args()
    cfg, model, datamodule = load_run(args.run, args.ckpt)
    if cfg.model.net.get("head", "hih") != "hih" or model.net.head is None:
        sys.exit(f"{args.run}: net.head is {cfg.model.net.get('head')!r}; the receptive-field "
                 "split needs the published decimal head (model.net.head=hih)")
    codec, size = model.codec, model.codec.heatmap_size
    windows = head_windows(model.net.head, size)
    k = codec.decimal_size
    inside, columns = [], {}
    for batch in datamodule.test_dataloader():
        with torch.no_grad():
            out = model(batch["image"])
        truth = batch["landmarks"] / model.stride
        integer, frac = split_integer(truth, size)
        inside.append(inside_window(windows, codec.decimal_class(frac), integer))
        didx = out.decimals.flatten(-2).argmax(dim=-1)
        predicted = torch.stack((didx % k, didx // k), dim=-1)
        for key, values in (
                ("decimal acc (%)", codec.diagnostics(out, truth)["decimal_hit"]),
                ("position-only guess (%)", inside[-1] * seeing_guess(windows, integer)),
                ("predicted cell sees pixel (%)", inside_window(windows, predicted, integer))):
            columns.setdefault(key, []).append(values)
    print(f"windows (x = y) of cells 0..{k - 1} on the {size}x{size} map: "
          + ", ".join(f"{lo}..{hi}" for lo, hi in windows[0, :, 0].tolist()))
    rows = split_rows(torch.cat(inside), {key: torch.cat(v) for key, v in columns.items()})
    print(markdown_table(rows, k, f"{args.run.name}, test split, k={k}"))


if __name__ == "__main__":
    main()
