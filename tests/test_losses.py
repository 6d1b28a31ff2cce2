"""Losses against hand computations, and LandmarkLoss's choice of terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hih_lightning.codecs import HIHCodec, OffsetCodec, SoftArgmaxCodec
from hih_lightning.losses import (
    LandmarkLoss,
    csc_loss,
    decimal_mse,
    heatmap_mse,
    integral_l1,
    offset_l1,
)
from hih_lightning.models.output import NetOutput


def test_csc_loss_matches_a_hand_computation() -> None:
    # B=1, N=2, k=2: four classes per landmark
    logits = [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -0.5, 3.0]]
    labels = [[0.1, 0.2, 0.6, 0.1], [0.25, 0.25, 0.25, 0.25]]
    total = 0.0
    for z, q in zip(logits, labels, strict=True):
        lse = math.log(sum(math.exp(v) for v in z))
        for zc, qc in zip(z, q, strict=True):
            total += qc * (math.log(qc) - (zc - lse))
    expect = total / (1 * 2 * 2 * 2)  # 'mean' over B*N*k*k elements, not per landmark
    got = csc_loss(torch.tensor(logits).reshape(1, 2, 2, 2), torch.tensor(labels)[None])
    assert math.isclose(float(got), expect, rel_tol=1e-5)
    # per-landmark weights: dropping landmark 1 keeps only landmark 0's sum, same divisor
    w = torch.tensor([[1.0, 0.0]])
    got_w = csc_loss(torch.tensor(logits).reshape(1, 2, 2, 2), torch.tensor(labels)[None], w)
    first = sum(q * (math.log(q) - (z - math.log(sum(math.exp(v) for v in logits[0]))))
                for z, q in zip(logits[0], labels[0], strict=True))
    assert math.isclose(float(got_w), first / 8, rel_tol=1e-5)


def test_csc_is_zero_when_the_prediction_is_the_label() -> None:
    labels = HIHCodec().encode(torch.tensor([[[5.3, 6.7]]]))["decimal_labels"]
    logits = labels.log().reshape(1, 1, 8, 8) + 3.0  # any shift: softmax is invariant
    assert float(csc_loss(logits, labels)) < 1e-6


def test_heatmap_mse_sums_stacks_and_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
    target = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    expect = 0.0
    for s in range(3):
        sq = [(pred[b, s, n, y, x] - target[b, n, y, x]) ** 2
              for b in range(2) for n in range(4) for y in range(5) for x in range(6)]
        expect += sum(sq) / len(sq)
    got = heatmap_mse(torch.from_numpy(pred), torch.from_numpy(target))
    assert math.isclose(float(got), expect, rel_tol=1e-5)
    w = np.ones((2, 4), np.float32)
    w[1, 2] = 0.0
    expect_w = sum(((pred[:, s] - target) ** 2 * w[:, :, None, None]).mean() for s in range(3))
    got_w = heatmap_mse(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(w))
    assert math.isclose(float(got_w), float(expect_w), rel_tol=1e-5)
    assert float(got_w) < float(got)


def test_decimal_mse_and_offset_l1() -> None:
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.allclose(decimal_mse(a, b), ((a - b) ** 2).mean())
    pred, target = torch.rand(2, 3, 2), torch.rand(2, 3, 2)
    assert torch.allclose(offset_l1(pred, target), (pred - target).abs().mean())
    # maps are read at the *target* integer pixel
    maps = torch.rand(2, 3, 2, 8, 8)
    integer = torch.randint(0, 8, (2, 3, 2))
    read = torch.stack([torch.stack([maps[b, n, :, integer[b, n, 1], integer[b, n, 0]]
                                     for n in range(3)]) for b in range(2)])
    assert torch.allclose(offset_l1(maps, target, integer), (read - target).abs().mean())
    with pytest.raises(ValueError, match="integer"):
        offset_l1(maps, target)


def _one_hot_heatmaps(peaks: list[list[tuple[int, int]]], size: int = 8) -> torch.Tensor:
    """(1, S, N, size, size) maps of value 10 at each (x, y) peak, 0 elsewhere: with beta 16
    the soft-argmax is the peak pixel itself (background weight e^-160)."""
    heat = torch.zeros(1, len(peaks), len(peaks[0]), size, size)
    for s, stack in enumerate(peaks):
        for n, (x, y) in enumerate(stack):
            heat[0, s, n, y, x] = 10.0
    return heat


def test_integral_l1_by_hand() -> None:
    codec = SoftArgmaxCodec(heatmap_size=8)
    heat = _one_hot_heatmaps([[(1, 2), (5, 6)], [(3, 3), (0, 7)]])
    coords = torch.tensor([[[2.5, 2.0], [4.0, 7.5]]])
    # stack 0: |1-2.5| + |2-2| + |5-4| + |6-7.5| = 4 -> mean 1.0;
    # stack 1: |3-2.5| + |3-2| + |0-4| + |7-7.5| = 6 -> mean 1.5; summed over stacks: 2.5
    assert math.isclose(float(integral_l1(heat, coords, codec)), 2.5, rel_tol=1e-6)
    # one stack given as (B, N, H, W)
    assert math.isclose(float(integral_l1(heat[:, 1], coords, codec)), 1.5, rel_tol=1e-6)
    # landmark 1 weighted 0: (1.5 + 0) / 4 + (0.5 + 1) / 4, the divisor stays B*N*2
    w = torch.tensor([[1.0, 0.0]])
    assert math.isclose(float(integral_l1(heat, coords, codec, w)), 0.75, rel_tol=1e-6)


def test_integral_l1_is_small_on_ideal_heatmaps_and_differentiable() -> None:
    codec = SoftArgmaxCodec(heatmap_size=32)
    pts = torch.rand(2, 5, 2) * 31
    t = codec.encode(pts)
    heat = t["heatmaps"].unsqueeze(1).repeat(1, 2, 1, 1, 1).requires_grad_(True)
    loss = integral_l1(heat, t["coords"], codec)
    # two stacks, each within the soft-argmax round-trip bound
    assert float(loss.detach()) < 2 * 0.13
    loss.backward()
    assert heat.grad is not None and heat.grad.abs().sum() > 0


def _hih_output(targets: dict[str, torch.Tensor], stacks: int = 2) -> NetOutput:
    return NetOutput(heatmaps=targets["heatmaps"].unsqueeze(1).repeat(1, stacks, 1, 1, 1) + 0.1,
                     decimals=torch.randn(*targets["decimals"].shape))


def test_landmark_loss_hih_components_and_total() -> None:
    codec = HIHCodec()
    t = codec.encode(torch.rand(2, 3, 2) * 63)
    out = _hih_output(t)
    res = LandmarkLoss()(out, t)
    assert set(res) == {"loss", "heatmap", "csc"}
    assert math.isclose(float(res["heatmap"]), 2 * 0.01, rel_tol=1e-4)
    assert torch.allclose(res["loss"], res["heatmap"] + 0.05 * res["csc"])
    res = LandmarkLoss(decimal="mse", decimal_weight=1.0)(out, t)
    assert set(res) == {"loss", "heatmap", "decimal_mse"}
    assert torch.allclose(res["loss"], res["heatmap"] + res["decimal_mse"])
    res = LandmarkLoss(decimal="none")(out, t)
    assert set(res) == {"loss", "heatmap"}
    # visibility weights reach every term
    t["weights"] = torch.zeros(2, 3)
    res = LandmarkLoss()(out, t)
    assert float(res["loss"]) == 0.0


def test_landmark_loss_offsets_by_hand() -> None:
    # B=1, N=2 on a 16x16 heatmap: integer pixels (12, 10) and (3, 7), fractions by hand
    t = OffsetCodec(heatmap_size=16).encode(torch.tensor([[[12.25, 10.5], [3.0, 7.75]]]))
    assert t["integer"].tolist() == [[[12, 10], [3, 7]]]
    assert t["offsets"].tolist() == [[[0.25, 0.5], [0.0, 0.75]]]
    heat = (t["heatmaps"] + 0.1).unsqueeze(1)            # one stack, 0.1 off everywhere
    predicted = torch.tensor([[[0.5, 0.25], [0.125, 0.75]]])
    offset = (0.25 + 0.25 + 0.125 + 0.0) / 4             # L1, mean over B*N*2
    maps = torch.full((1, 2, 2, 16, 16), 7.0)            # read at the target pixel only
    maps[0, 0, :, 10, 12] = predicted[0, 0]
    maps[0, 1, :, 7, 3] = predicted[0, 1]
    for offsets in (predicted, maps):
        out = NetOutput(heatmaps=heat, offsets=offsets)
        res = LandmarkLoss(decimal="none", offset_weight=2.0)(out, t)
        assert set(res) == {"loss", "heatmap", "offset"}
        assert math.isclose(float(res["heatmap"]), 0.01, rel_tol=1e-5)
        assert math.isclose(float(res["offset"]), offset, rel_tol=1e-6)
        assert math.isclose(float(res["loss"]), 0.01 + 2.0 * offset, rel_tol=1e-5)
        integer = t["integer"] if offsets.dim() == 5 else None
        assert torch.equal(res["offset"], offset_l1(offsets, t["offsets"], integer))
        assert torch.equal(res["heatmap"], heatmap_mse(heat, t["heatmaps"]))


def test_landmark_loss_integral_by_hand() -> None:
    sa = SoftArgmaxCodec(heatmap_size=8)
    t = sa.encode(torch.tensor([[[2.5, 2.0], [4.0, 7.5]]]))
    heat = _one_hot_heatmaps([[(1, 2), (5, 6)], [(3, 3), (0, 7)]])
    res = LandmarkLoss(decimal="none", integral_weight=0.5, integral_codec=sa)(
        NetOutput(heatmaps=heat), t)
    assert set(res) == {"loss", "heatmap", "integral"}
    # as in test_integral_l1_by_hand, but the coordinate target 7.5 is clipped to the map's
    # last pixel 7: stack 0 (1.5 + 0 + 1 + 1) / 4, stack 1 (0.5 + 1 + 4 + 0) / 4
    assert t["coords"].tolist() == [[[2.5, 2.0], [4.0, 7.0]]]
    assert math.isclose(float(res["integral"]), 0.875 + 1.375, rel_tol=1e-6)
    mse = sum(float(((heat[:, s] - t["heatmaps"]) ** 2).mean()) for s in range(2))
    assert math.isclose(float(res["heatmap"]), mse, rel_tol=1e-6)
    assert math.isclose(float(res["loss"]), mse + 0.5 * 2.25, rel_tol=1e-6)
    # without a codec the loss makes one for the heatmap size (beta 16): the same value
    res = LandmarkLoss(decimal="none", integral_weight=0.5)(NetOutput(heatmaps=heat), t)
    assert math.isclose(float(res["integral"]), 2.25, rel_tol=1e-6)


def test_landmark_loss_rejects_mismatched_codec_and_head() -> None:
    hih_t = HIHCodec().encode(torch.rand(1, 2, 2) * 63)
    heat_only = NetOutput(heatmaps=hih_t["heatmaps"].unsqueeze(1))
    with pytest.raises(ValueError, match="no decimals"):
        LandmarkLoss()(heat_only, hih_t)
    off_t = OffsetCodec().encode(torch.rand(1, 2, 2) * 63)
    with pytest.raises(ValueError, match="decimal_labels"):
        LandmarkLoss()(_hih_output(hih_t), off_t)
    with pytest.raises(ValueError, match="no offset head"):
        LandmarkLoss(decimal="none")(heat_only, off_t)
    with pytest.raises(ValueError, match="coords"):
        LandmarkLoss(decimal="none", integral_weight=1.0)(heat_only, hih_t)
    with pytest.raises(ValueError, match="decimal"):
        LandmarkLoss(decimal="bogus")
