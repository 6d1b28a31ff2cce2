"""Randomized-rounding codec: exact round trip on the expected target, unbiased draws,
the decoder's block choice and formula by hand, and the gain over plain argmax."""

from __future__ import annotations

import math

import pytest
import torch

from hih_lightning.codecs import ArgmaxCodec, RandomizedRoundingCodec
from hih_lightning.models.output import NetOutput

H = 64
FIXED = torch.tensor([[[10.3, 20.8], [5.0, 62.75], [62.75, 0.4], [33.5, 7.0]]])


def _random_points(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 50, 2, generator=g, dtype=torch.float64).float() * (H - 1)


def _hard_points() -> torch.Tensor:
    """Integers, x.5, both borders and fractions 0.999, (1, M, 2), all inside [0, 63]."""
    xs = [0.0, 63.0, 7.0, 5.5, 10.999, 0.999, 62.999, 62.5, 31.0, 0.5]
    ys = [63.0, 0.0, 40.5, 12.0, 0.999, 62.999, 33.0, 0.0, 31.999, 63.0]
    return torch.tensor([list(zip(xs, ys, strict=True))], dtype=torch.float32)


def _decode(codec: RandomizedRoundingCodec, heatmaps: torch.Tensor) -> torch.Tensor:
    """Decode (B, N, H, W) heatmaps given as a one-stack output."""
    return codec.decode(NetOutput(heatmaps=heatmaps.unsqueeze(1))).landmarks


@pytest.mark.parametrize("sigma", [1.5, 1.0])
def test_roundtrip_on_the_expected_target_is_exact(sigma: float) -> None:
    codec = RandomizedRoundingCodec(heatmap_size=H, sigma=sigma)
    pts = torch.cat([_random_points(), _hard_points().expand(4, -1, -1)], dim=1)
    decoded = codec.decode(codec.ideal_output(pts))
    assert decoded.landmarks.dtype == torch.float32
    assert (decoded.landmarks - pts).abs().max() < 1e-4


def test_encode_rounds_up_with_probability_equal_to_the_fraction() -> None:
    codec = RandomizedRoundingCodec(heatmap_size=H)
    torch.manual_seed(0)
    draws = torch.cat([codec.encode(FIXED.expand(1000, -1, -1))["integer"]
                       for _ in range(20)])                               # (20000, 4, 2)
    assert draws.dtype == torch.long
    floor = FIXED.floor().long()
    assert ((draws == floor) | (draws == floor + 1)).all()
    assert (draws[:, 1, 0] == 5).all()                                    # integer: never moves
    err = (draws.double().mean(dim=0) - FIXED[0].double()).abs()
    assert err.max() < 0.02, err
    # the heatmaps are Gaussians at the drawn pixel: their argmax is the integer target
    t = codec.encode(FIXED)
    flat = t["heatmaps"].flatten(-2).argmax(-1)
    assert torch.equal(torch.stack((flat % H, flat // H), dim=-1), t["integer"])


def test_same_seed_same_targets() -> None:
    codec = RandomizedRoundingCodec(heatmap_size=H)
    torch.manual_seed(3)
    first = codec.encode(FIXED.expand(64, -1, -1))["integer"]
    torch.manual_seed(3)
    assert torch.equal(codec.encode(FIXED.expand(64, -1, -1))["integer"], first)


def test_mean_of_drawn_targets_decodes_to_the_point() -> None:
    """The expected target is what an MSE-trained network learns: averaging 4,000 drawn
    targets, the decoder returns the mean drawn pixel, and that is within 0.02 px of p."""
    codec = RandomizedRoundingCodec(heatmap_size=H)
    torch.manual_seed(1)
    total = torch.zeros(1, FIXED.shape[1], H, H, dtype=torch.float64)
    integer_sum = torch.zeros(FIXED.shape[1:], dtype=torch.float64)
    for _ in range(8):
        t = codec.encode(FIXED.expand(500, -1, -1))
        total += t["heatmaps"].double().sum(dim=0, keepdim=True)
        integer_sum += t["integer"].double().sum(dim=0)
    mean = (total / 4000).float()
    decoded = _decode(codec, mean)[0]
    assert (decoded - integer_sum / 4000).abs().max() < 1e-4   # exact for the sample mean
    assert (decoded - FIXED[0]).abs().max() < 0.02
    # and the sample mean converges to the analytic expected target
    assert (mean - codec.ideal_output(FIXED).heatmaps[:, -1]).abs().max() < 0.01


def test_decoder_reads_the_block_by_hand() -> None:
    sigma = 0.5
    codec = RandomizedRoundingCodec(heatmap_size=H, sigma=sigma)
    a = math.exp(-1 / (2 * sigma * sigma))

    def frac(r: float) -> float:
        return min(max((r * (1 + a) - a) / (1 - a), 0.0), 1.0)

    hm = torch.zeros(1, 4, H, H)
    # 0: argmax (5, 7), higher x neighbour to the right, equal y neighbours -> block x 5..6,
    #    y 7..8; columns 1.0 | 0.5, rows 1.5 / 0 (the -0.3 is clipped to 0)
    hm[0, 0, 7, 5], hm[0, 0, 7, 6], hm[0, 0, 8, 6] = 1.0, 0.5, -0.3
    # 1: argmax (20, 30), higher neighbours left and below -> block x 19..20, y 30..31
    hm[0, 1, 30, 20], hm[0, 1, 30, 19], hm[0, 1, 31, 20], hm[0, 1, 31, 19] = 1.0, 0.8, 0.4, -0.5
    # 2: a lone peak in the corner (63, 0): the block is clamped onto the map
    hm[0, 2, 0, 63] = 1.0
    # 3: all zero: argmax (0, 0), empty block -> r = 0.5 per axis
    got = _decode(codec, hm)[0]
    expect = torch.tensor([
        [5 + frac(0.5 / 1.5), 7 + frac(0.0)],
        [19 + frac(1.4 / 2.2), 30 + frac(0.4 / 2.2)],
        [62 + frac(1.0), 0 + frac(0.0)],
        [frac(0.5), frac(0.5)],
    ])
    assert torch.allclose(got, expect, atol=1e-6), (got, expect)
    # the hand values are not degenerate: the formula does not just clamp
    assert 0.2 < frac(0.5 / 1.5) < 0.3 and 0.05 < frac(0.4 / 2.2) < 0.1
    assert frac(0.5) == pytest.approx(0.5)


def test_beats_argmax_on_ideal_output() -> None:
    pts = _random_points(seed=5)
    rr = RandomizedRoundingCodec(heatmap_size=H)
    argmax = ArgmaxCodec(heatmap_size=H)
    rr_err = (rr.decode(rr.ideal_output(pts)).landmarks - pts).abs().mean()
    argmax_err = (argmax.decode(argmax.ideal_output(pts)).landmarks - pts).abs().mean()
    assert rr_err < 1e-4
    assert argmax_err > 0.2
