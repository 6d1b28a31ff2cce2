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
    far = integral_l1(heat.detach(), t["coords"] + 3.0, codec)
    assert float(far) > 2 * 2.5


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


def test_landmark_loss_offsets_and_integral() -> None:
    codec = OffsetCodec()
    t = codec.encode(torch.rand(2, 3, 2) * 63)
    for maps in (False, True):
        out = OffsetCodec(offset_maps=maps).ideal_output(torch.rand(2, 3, 2) * 63)
        res = LandmarkLoss(decimal="none")(out, t)
        assert set(res) == {"loss", "heatmap", "offset"} and float(res["offset"]) > 0
        assert torch.allclose(res["loss"], res["heatmap"] + res["offset"])
    sa = SoftArgmaxCodec()
    t = sa.encode(torch.rand(2, 3, 2) * 63)
    res = LandmarkLoss(decimal="none", integral_weight=0.5)(sa.ideal_output(t["coords"]), t)
    assert set(res) == {"loss", "heatmap", "integral"}
    assert torch.allclose(res["loss"], res["heatmap"] + 0.5 * res["integral"])


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
