"""Receptive-field windows of the HIH decimal head's output cells (analysis.receptive_field).

Analytic derivation, per axis (x and y are the same): walking back from output cell c, the
1x1 predict/project convs read c; a DownBlock's output o reads its input at 2o-3 .. 2o+3
(conv3x3/1 pad 1 after conv3x3/2 pad 1: 2(o-1)-1 .. 2(o+1)+1; the 1x1/2 shortcut reads 2o,
inside that); the max-pool 3x3/2 without padding reads 2o .. 2o+2; the 1x1 widen reads o.
Every range is clipped to the map it indexes (zero padding carries nothing).
64x64, k = 8 (64 -> pool 31 -> 16 -> 8):
  c = 0: 16-map -3..3 -> 0..3; 31-map -3..9 -> 0..9; input 0..20
  c = 4: 16-map 5..11; 31-map 7..25; input 14..52
  c = 7: 16-map 11..17 -> 11..15; 31-map 19..33 -> 19..30; input 38..62
The pool's last window ends at 2*30+2 = 62, so row/column 63 (and 15 of a 16x16 map) is
seen by no cell at all.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from hih_lightning.analysis.receptive_field import (
    analytic_decimal_windows,
    decimal_cell_windows,
    inside_window,
)
from hih_lightning.models.heads import DecimalHead

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _windows(size: int, k: int, in_ch: int = 8, channels: int = 8) -> torch.Tensor:
    head = DecimalHead(in_ch, 2, size, k, channels=channels)
    windows = decimal_cell_windows(head, in_ch, size)
    assert torch.equal(windows, analytic_decimal_windows(head, size))
    return windows


def _axis(windows: torch.Tensor) -> list[list[int]]:
    """Per-cell [lo, hi] along x (the same along y: the windows are separable squares)."""
    k = windows.shape[0]
    for cy in range(k):
        assert torch.equal(windows[cy, :, 0], windows[0, :, 0])  # x range depends on cx only
        assert torch.equal(windows[:, cy, 1], windows[:, 0, 1])  # y range on cy only
    assert torch.equal(windows[0, :, 0], windows[:, 0, 1])
    return windows[0, :, 0].tolist()


def test_windows_64_k8_match_the_claim():
    windows = _windows(64, 8)
    assert windows.shape == (8, 8, 2, 2) and windows.dtype == torch.long
    assert windows[0, 0].tolist() == [[0, 20], [0, 20]]
    assert windows[4, 4].tolist() == [[14, 52], [14, 52]]
    assert windows[7, 7].tolist() == [[38, 62], [38, 62]]
    assert _axis(windows) == [[0, 20], [0, 28], [0, 36], [6, 44], [14, 52], [22, 60],
                              [30, 62], [38, 62]]
    assert windows[..., 1].max() == 62  # pixel 63 is in no window


def test_windows_64_k4_widths():
    axis = _axis(_windows(64, 4))
    assert axis == [[0, 44], [0, 60], [0, 62], [6, 62]]
    # "about 45 px wide" holds for cell 0 only: widths 45, 61, 63, 57
    assert [hi - lo + 1 for lo, hi in axis] == [45, 61, 63, 57]


def test_windows_16_k4_the_64px_ablation_budget():
    """hih_cpu at input 64: 16x16 heatmap, k = 4 (64 -> pool 7 -> 4)."""
    windows = _windows(16, 4, in_ch=16, channels=16)
    assert _axis(windows) == [[0, 8], [0, 12], [2, 14], [6, 14]]
    whole = (windows[..., 0] == 0) & (windows[..., 1] == 15)
    assert not whole.any()  # no cell sees the whole 16x16 map, and pixel 15 is seen by none


@pytest.mark.parametrize("size,k", [(32, 8), (32, 4), (128, 8), (16, 4)])
def test_autograd_matches_geometry(size, k):
    _windows(size, k)


def test_narrow_probe_equals_full_width_and_leaves_head_alone():
    head = DecimalHead(6, 3, 32, 4, channels=5)
    with torch.no_grad():
        for module in head.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-3, 3)  # a "trained" head: cannot zero the probe
    before = {k: v.clone() for k, v in head.state_dict().items()}
    wide = decimal_cell_windows(head, 6, 32, narrow=False)
    assert torch.equal(wide, decimal_cell_windows(head, 6, 32))
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())


def test_inside_window_hand_made():
    windows = torch.zeros(2, 2, 2, 2, dtype=torch.long)
    windows[..., 0, :] = torch.tensor([[0, 5], [3, 9]])[None, :, :]   # x range by cx
    windows[..., 1, :] = torch.tensor([[0, 5], [3, 9]])[:, None, :]   # y range by cy
    cell = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 1], [1, 1], [0, 1], [2, 0], [-1, 0]])
    pixel = torch.tensor([[5, 5], [6, 0], [3, 5], [9, 3], [2, 4], [0, 3], [4, 4], [4, 4]])
    expected = [True, False, True, True, False, True, False, False]
    assert inside_window(windows, cell, pixel).tolist() == expected
    batched = inside_window(windows, cell.view(2, 4, 2), pixel.view(2, 4, 2))
    assert batched.shape == (2, 4) and batched.flatten().tolist() == expected


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rf_split_core():
    tool = _tool("decimal_rf_split")
    inside = torch.tensor([[True, True, True, False], [False, True, False, False]])
    hit = torch.tensor([[True, False, True, False], [True, False, False, False]])
    rows = tool.split_rows(inside, {"acc": hit})
    assert rows["inside"] == {"landmarks": 4, "%": 50.0, "acc": 50.0}
    assert rows["outside"] == {"landmarks": 4, "%": 50.0, "acc": 25.0}
    assert rows["all"] == {"landmarks": 8, "%": 100.0, "acc": 37.5}
    table = tool.markdown_table(rows, 4, "t")
    assert "| inside | 4 | 50.00 | 50.00 | 6.25 |" in table
    empty = tool.split_rows(torch.ones(3, dtype=torch.bool), {"acc": torch.ones(3)})
    assert empty["outside"]["landmarks"] == 0 and math.isnan(empty["outside"]["acc"])
    # position-only baseline on the 16x16 / k = 4 windows: pixel 0 is seen by cells 0 and 1
    # per axis (4 cells), pixel 7 by all 4 per axis (16), pixel 15 by none
    windows = _windows(16, 4, in_ch=4, channels=4)
    guess = tool.seeing_guess(windows, torch.tensor([[0, 0], [7, 7], [0, 7], [15, 15]]))
    assert guess.tolist() == [0.25, 1 / 16, 1 / 8, 1.0]  # 1.0 for none: zeroed by `inside`


def test_learning_curve_table(tmp_path):
    tool = _tool("learning_curve")
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    lines = ["epoch,step,train/loss,val/decimal_acc,val/nme"]
    for epoch in range(10):
        lines += [f"{epoch},{epoch * 10 + 5},0.5,,", f"{epoch},{epoch * 10 + 9},,0.0{epoch},0.1"]
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    curves = tool.read_curves(tool.find_metrics_csv(run), ["val/decimal_acc", "val/nme"])
    assert curves["val/decimal_acc"][2] == (2, 29, 0.02)
    table = tool.table(curves).splitlines()
    assert table[0] == "| epoch | step | val/decimal_acc (%) | val/nme (%) |"
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 0", "| 8", "| 9"]
    assert table[3] == "| 8 | 89 | 8.00 | 10.00 |"
    tool.plot({"run": curves}, {"run": 4}, ["val/decimal_acc", "val/nme"], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
