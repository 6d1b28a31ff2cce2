"""Codec round trips, the published-release defects behind the flag, and batched shapes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from hih_lightning.codecs import (
    ArgmaxCodec,
    Codec,
    DARKCodec,
    Decoded,
    HIHCodec,
    OffsetCodec,
    QuarterShiftCodec,
    RandomizedRoundingCodec,
    SoftArgmaxCodec,
)
from hih_lightning.codecs.gaussian import flat_argmax, gather_patch, render_gaussians
from hih_lightning.codecs.hih import published_window
from hih_lightning.models.output import NetOutput

H = 64


def _points(b: int = 4, n: int = 50, lo: float = 0.0, hi: float = H - 1e-3,
            seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + torch.rand(b, n, 2, generator=g, dtype=torch.float64).float() * (hi - lo)


def _hard_points() -> torch.Tensor:
    """Fractions in [15/16, 1), exact cell edges, and both heatmap borders, (1, M, 2)."""
    xs = [0.0, H - 1 + 0.999, 10 + 15 / 16, 10.97, 20.9999, 5.5, 7.0, 0.0625, H - 1.0, 3.125]
    ys = [H - 1 + 0.999, 0.0, 30.99, 12 + 15 / 16, 0.001, 63.5, 2.9999, 33.0, 0.5, 62.96875]
    return torch.tensor([list(zip(xs, ys, strict=True))], dtype=torch.float32)


def _roundtrip(codec: Codec, pts: torch.Tensor) -> torch.Tensor:
    return codec.decode(codec.ideal_output(pts)).landmarks


# -- HIH ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [4, 8, 16])
def test_hih_roundtrip_within_half_a_decimal_cell(k: int) -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=k)
    pts = torch.cat([_points(), _hard_points().expand(4, -1, -1)], dim=1)
    err = (_roundtrip(codec, pts) - pts).abs()
    assert err.max() <= 1 / (2 * k) + 1e-5
    # the bound is tight: the error of a cell-edge point is exactly half a cell
    edge = torch.tensor([[[7.0, 9.0]]])
    assert torch.allclose((_roundtrip(codec, edge) - edge).abs(), torch.tensor(0.5 / k))


def test_hih_diagnostics_score_the_decimal_head_against_the_truth() -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=8)
    pts = torch.tensor([[[10.3, 20.8], [0.99, 63.2], [5.0, 5.0]]])
    ideal = codec.ideal_output(pts)
    diag = codec.diagnostics(ideal, pts)
    assert diag["decimal_hit"].tolist() == [[True, True, True]]
    # integer-only decode: the pixel centre of floor(p)
    assert torch.equal(diag["integer_centre"], torch.tensor([[[10.5, 20.5], [0.5, 63.5],
                                                              [5.5, 5.5]]]))
    # move landmark 0's decimal peak one cell right: a miss for it alone
    wrong = ideal.decimals.clone()
    wrong[0, 0] = torch.roll(wrong[0, 0], shifts=1, dims=-1)
    hits = codec.diagnostics(NetOutput(heatmaps=ideal.heatmaps, decimals=wrong), pts)
    assert hits["decimal_hit"].tolist() == [[False, True, True]]


def test_hih_target_layout() -> None:
    codec = HIHCodec()
    pts = torch.tensor([[[10.3, 20.8], [0.99, 63.2]]])
    t = codec.encode(pts)
    assert t["integer"].tolist() == [[[10, 20], [0, 63]]]
    # integer Gaussian: peak 1 exactly at (x=10, y=20), sigma 1.5
    hm = t["heatmaps"][0, 0]
    assert hm[20, 10] == 1.0 and int(hm.argmax()) == 20 * H + 10
    assert math.isclose(float(hm[20, 11]), math.exp(-1 / (2 * 1.5**2)), rel_tol=1e-6)
    # decimal cell: x frac 0.3 -> floor(2.4) = 2, y frac 0.8 -> floor(6.4) = 6; map[cy, cx]
    dec = t["decimals"][0, 0]
    assert dec[6, 2] == 1.0 and int(dec.flatten().argmax()) == 6 * 8 + 2
    assert int(t["decimal_labels"][0, 0].argmax()) == 6 * 8 + 2
    # second landmark: frac 0.99 -> cell 7; frac 0.2 -> 1
    assert int(t["decimals"][0, 1].flatten().argmax()) == 1 * 8 + 7


def test_hih_off_map_landmarks_clip_to_the_border_cell() -> None:
    codec = HIHCodec()
    pts = torch.tensor([[[-3.0, 70.0], [64.5, -0.2]]])
    t = codec.encode(pts)
    assert t["integer"].tolist() == [[[0, 63], [63, 0]]]
    out = _roundtrip(codec, pts)
    assert torch.allclose(out, torch.tensor([[[0.0625, 63.9375], [63.9375, 0.0625]]]))


def test_hih_decode_network_style_output_is_argmax_plus_cell_centre() -> None:
    g = torch.Generator().manual_seed(1)
    b, s, n, k = 2, 3, 4, 8
    heat = torch.rand(b, s, n, H, H, generator=g) * 0.5
    logits = torch.randn(b, n, k, k, generator=g) * 3
    peaks = torch.randint(0, H, (b, n, 2), generator=g)
    cells = torch.randint(0, k, (b, n, 2), generator=g)
    for bi in range(b):
        for j in range(n):
            px, py = peaks[bi, j].tolist()
            cx, cy = cells[bi, j].tolist()
            heat[bi, -1, j, py, px] = 2.0
            heat[bi, 0, j, (py + 7) % H, (px + 5) % H] = 9.0  # an earlier stack is ignored
            logits[bi, j, cy, cx] = logits[bi, j].max() + 1.0
    dec = HIHCodec(decimal_size=k).decode(NetOutput(heatmaps=heat, decimals=logits))
    expect = peaks.float() + (cells.float() + 0.5) / k
    assert torch.equal(dec.landmarks, expect)
    assert torch.allclose(dec.scores, torch.full((b, n), 2.0))


def test_hih_all_negative_decimal_logits() -> None:
    heat = torch.zeros(1, 1, 1, H, H)
    heat[0, 0, 0, 12, 30] = 1.0
    logits = -5.0 - torch.rand(1, 1, 8, 8)
    logits[0, 0, 3, 6] = -0.5  # the largest, but negative
    out = NetOutput(heatmaps=heat, decimals=logits)
    fixed = HIHCodec().decode(out).landmarks
    assert torch.allclose(fixed, torch.tensor([[[30 + 6.5 / 8, 12 + 3.5 / 8]]]))
    published = HIHCodec(published_compat=True).decode(out).landmarks
    assert torch.equal(published, torch.tensor([[[30.0, 12.0]]]))  # offset silently dropped
    logits[0, 0, 3, 6] = 0.5
    published = HIHCodec(published_compat=True).decode(out).landmarks
    assert torch.equal(published, torch.tensor([[[30 + 6 / 8, 12 + 3 / 8]]]))


def test_published_integer_peak_is_one_pixel_off_for_positions_0_to_4() -> None:
    xs = torch.arange(10, dtype=torch.float32) + 0.3
    pts = torch.stack((xs, torch.full_like(xs, 30.3)), dim=-1)[None]  # (1, 10, 2)
    pub = HIHCodec(published_compat=True).encode(pts)["heatmaps"][0]
    ok = HIHCodec().encode(pts)["heatmaps"][0]
    pub_x = pub.flatten(-2).argmax(-1) % H
    pub_y = pub.flatten(-2).argmax(-1) // H
    ok_x = ok.flatten(-2).argmax(-1) % H
    assert ok_x.tolist() == list(range(10))
    assert pub_x.tolist() == [1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    assert pub_y.tolist() == [30] * 10  # y = 30 >= 5 is unaffected
    # the window is cut at 3 sigma: 5 px left, 4 px right of the (correct) peak at x=9
    assert pub[9, 30, 4] > 0 and pub[9, 30, 3] == 0 and pub[9, 30, 13] > 0 and pub[9, 30, 14] == 0
    # integral 3*sigma has no truncation defect
    peak, _, _ = published_window(torch.arange(5.0), sigma=2.0)
    assert peak.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_published_top_fraction_falls_off_the_decimal_map() -> None:
    pts = torch.tensor([[[10.97, 20.2], [13 + 15 / 16, 40.5625]]])
    pub = HIHCodec(published_compat=True)
    t = pub.encode(pts)
    # class 8 is off the 8x8 map: only the tail is drawn, its maximum at column 7 is < 1
    assert math.isclose(float(t["decimals"][0, 0].max()), math.exp(-0.5), rel_tol=1e-6)
    dec = pub.decode(pub.ideal_output(pts)).landmarks
    assert torch.allclose(dec[0, :, 0], torch.tensor([10.875, 13.875]))  # 7/8, not ~1
    assert torch.allclose(dec[0, :, 1], torch.tensor([20.25, 40.625]))   # round(f*8)/8, half up
    fixed = HIHCodec()
    assert torch.allclose(_roundtrip(fixed, pts)[0, :, 0], torch.tensor([10.9375, 13.9375]))


def test_soft_labels_match_the_spec_for_k8() -> None:
    # fraction 0.55 in both axes -> cell floor(0.55 * 8) = 4; the 8x8 Gaussian of sigma 1 (in
    # cells) and peak 1 on cell (4, 4), built here cell by cell, as map[cy, cx]
    gauss = torch.tensor([[math.exp(-((cx - 4) ** 2 + (cy - 4) ** 2) / 2.0) for cx in range(8)]
                          for cy in range(8)], dtype=torch.float64).flatten()
    t = HIHCodec().encode(torch.tensor([[[3.55, 7.55]]]))
    lab = t["decimal_labels"][0, 0].double()
    torch.testing.assert_close(lab, torch.softmax(gauss, dim=0), rtol=0, atol=1e-7)
    assert int(lab.argmax()) == 4 * 8 + 4
    torch.testing.assert_close(t["decimals"][0, 0].double().flatten(), gauss, rtol=0, atol=1e-7)
    # the spec's description of these labels: ~0.038 at the peak, ~0.014 in empty cells
    assert abs(float(lab.max()) - 0.038) < 0.0015
    assert abs(float(lab.reshape(8, 8)[0, 0]) - 0.014) < 0.0007
    sharp = HIHCodec(soft_label="gaussian").encode(torch.tensor([[[3.55, 7.55]]]))
    torch.testing.assert_close(sharp["decimal_labels"][0, 0].double(), gauss / gauss.sum(),
                               rtol=0, atol=1e-7)


@pytest.mark.parametrize("k", [4, 8, 16])
def test_encode_decode_consistency(k: int) -> None:
    codec = HIHCodec(decimal_size=k)
    x = torch.cat([_points(seed=3), _hard_points().expand(4, -1, -1)], dim=1)
    y = _roundtrip(codec, x)                       # decode(encode(x))
    assert (y - x).abs().max() <= 1 / (2 * k) + 1e-5
    tx, ty = codec.encode(x), codec.encode(y)      # encode(decode(x)) == encode(x)
    for key in ("integer", "heatmaps", "decimals", "decimal_labels"):
        assert torch.equal(tx[key], ty[key]), key
    assert torch.equal(_roundtrip(codec, y), y)    # decoding is idempotent


def test_published_compat_breaks_consistency_at_the_top_fraction() -> None:
    codec = HIHCodec(published_compat=True)
    x = torch.tensor([[[10.97, 20.2]]])
    y = _roundtrip(codec, x)
    assert (y - x).abs().max() > 1 / 16  # more than half a decimal cell
    assert not torch.equal(codec.encode(y)["decimals"], codec.encode(x)["decimals"])


def test_hih_decode_bf16_and_float64() -> None:
    codec = HIHCodec()
    pts = _points(seed=5)
    out = codec.ideal_output(pts)
    ref = codec.decode(out).landmarks
    bf = NetOutput(out.heatmaps.bfloat16(), out.decimals.bfloat16())
    got = codec.decode(bf)
    assert got.landmarks.dtype == torch.float32 and torch.equal(got.landmarks, ref)
    assert torch.equal(_roundtrip(codec, pts.double()), ref)


def test_hih_decode_needs_decimals() -> None:
    with pytest.raises(ValueError, match="decimals"):
        HIHCodec().decode(NetOutput(heatmaps=torch.zeros(1, 1, 1, H, H)))


# -- baselines -------------------------------------------------------------------------------
def test_argmax_round_and_floor_bounds() -> None:
    # baseline pixels are centred on integers, so the map spans [-0.5, H-0.5); stay on it
    pts = _points(b=8, n=98, hi=H - 1.0, seed=7)
    err = _roundtrip(ArgmaxCodec(rounding="round"), pts) - pts
    assert err.abs().max() <= 0.5 + 1e-5 and err.abs().mean() > 0.2
    err = pts - _roundtrip(ArgmaxCodec(rounding="floor"), pts)
    assert err.min() >= 0 and err.max() < 1 and err.mean() > 0.4


def test_quarter_shift_bound_and_better_than_argmax() -> None:
    pts = _points(b=8, n=98, lo=2.0, hi=H - 3.0, seed=8)
    err = (_roundtrip(QuarterShiftCodec(), pts) - pts).abs()
    assert err.max() <= 0.5 + 1e-5
    # on sub-pixel (blurry) heatmaps, what a trained network produces, the quarter shift
    # halves the mean error of plain argmax (0.25 -> 0.125 px per axis in expectation)
    q = (_roundtrip(QuarterShiftCodec(rounding="none"), pts) - pts).abs()
    a = (_roundtrip(ArgmaxCodec(rounding="none"), pts) - pts).abs()
    assert q.max() <= 0.25 + 1e-5 and a.max() <= 0.5 + 1e-5
    assert q.mean() < 0.6 * a.mean()
    assert abs(float(q.mean()) - 0.125) < 0.01 and abs(float(a.mean()) - 0.25) < 0.01


def test_quarter_shift_direction() -> None:
    heat = torch.zeros(1, 1, 1, H, H)
    heat[0, 0, 0, 20, 10] = 1.0
    heat[0, 0, 0, 20, 11] = 0.5   # right neighbour higher -> +0.25 in x
    heat[0, 0, 0, 19, 10] = 0.4   # upper neighbour higher -> -0.25 in y
    pts = QuarterShiftCodec().decode(NetOutput(heatmaps=heat)).landmarks
    assert torch.equal(pts, torch.tensor([[[10.25, 19.75]]]))


def test_dark_interior_bound() -> None:
    # "interior": >= 3 px from the border; the 11-tap modulation's zero padding biases points
    # nearer the border (measured: < 0.01 px at 3 px, 0.08 px at 2 px, 0.33 px at 1 px)
    pts = _points(b=8, n=98, lo=3.0, hi=H - 4.0, seed=9)
    err = (_roundtrip(DARKCodec(), pts) - pts).abs()
    assert err.max() < 0.05
    pts = _points(b=8, n=98, lo=1.0, hi=H - 2.0, seed=9)
    # without modulation the log of a dense Gaussian is exactly quadratic
    err = (_roundtrip(DARKCodec(blur_kernel=0), pts) - pts).abs()
    assert err.max() < 1e-4


def test_argmax_and_quarter_shift_at_the_border() -> None:
    # round half up and floor, clipped to the map [0, 63], on and beyond both borders
    xs = [0.0, 0.49, -0.4, -3.0, 62.5, 63.0, 63.49, 63.9, 70.0]
    pts = torch.tensor([[[x, 31.0] for x in xs]])
    rounded = _roundtrip(ArgmaxCodec(rounding="round"), pts)[0, :, 0]
    assert rounded.tolist() == [0.0, 0.0, 0.0, 0.0, 63.0, 63.0, 63.0, 63.0, 63.0]
    floored = _roundtrip(ArgmaxCodec(rounding="floor"), pts)[0, :, 0]
    assert floored.tolist() == [0.0, 0.0, 0.0, 0.0, 62.0, 63.0, 63.0, 63.0, 63.0]
    # quarter shift on sub-pixel targets: no shift on an axis whose peak is on the border
    # (one neighbour is missing); one pixel in, the shift is back
    pts = torch.tensor([[[0.3, 31.0], [62.7, 31.0], [1.3, 31.0], [61.7, 0.2], [30.0, 62.9]]])
    got = _roundtrip(QuarterShiftCodec(rounding="none"), pts)
    assert got[0].tolist() == [[0.0, 31.0], [63.0, 31.0], [1.25, 31.0], [61.75, 0.0],
                               [30.0, 63.0]]


def _dark_by_hand(px: float, py: float, sigma: float = 1.5) -> np.ndarray:
    """DARK on a dense Gaussian target, in float64 with OpenCV: 11-tap blur (OpenCV's sigma
    for that size) with a zero (constant) border, one Newton step on log at the argmax."""
    ys, xs = np.mgrid[0:H, 0:H].astype(np.float64)
    heat = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))
    iy, ix = np.unravel_index(np.argmax(heat), heat.shape)
    lg = np.log(np.maximum(cv2.GaussianBlur(heat, (11, 11), 0,
                                            borderType=cv2.BORDER_CONSTANT), 1e-10))
    gradient = 0.5 * np.array([lg[iy, ix + 1] - lg[iy, ix - 1], lg[iy + 1, ix] - lg[iy - 1, ix]])
    dxy = 0.25 * (lg[iy + 1, ix + 1] - lg[iy + 1, ix - 1] - lg[iy - 1, ix + 1]
                  + lg[iy - 1, ix - 1])
    hessian = np.array([[lg[iy, ix + 1] - 2 * lg[iy, ix] + lg[iy, ix - 1], dxy],
                        [dxy, lg[iy + 1, ix] - 2 * lg[iy, ix] + lg[iy - 1, ix]]])
    return np.array([ix, iy]) - np.linalg.solve(hessian, gradient)


@pytest.mark.parametrize("distance", [1, 2, 3])
def test_dark_border_bias_is_the_zero_padded_blur(distance: int) -> None:
    # a point `distance` px (plus a fraction) from each of the four borders
    d = distance + 0.3
    pts = [(d, 31.6), (H - 1 - d, 31.6), (30.2, d), (30.2, H - 1 - d)]
    got = _roundtrip(DARKCodec(), torch.tensor([pts])).double()[0].numpy()
    expect = np.stack([_dark_by_hand(x, y) for x, y in pts])
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-5)
    # the zero border pulls the blurred peak inward, i.e. the estimate moves away from the
    # border, by an amount that falls quickly with the distance
    inward = np.array([1.0, -1.0, 1.0, -1.0])
    bias = (expect - np.array(pts))[np.arange(4), [0, 0, 1, 1]] * inward
    assert bias.min() > 0
    assert {1: 0.15 < bias.min() < 0.4, 2: 0.02 < bias.max() < 0.08,
            3: bias.max() < 0.01}[distance]


def test_dark_does_not_refine_on_the_border_pixel() -> None:
    pts = torch.tensor([[[0.2, 31.6], [63.0, 10.4], [20.3, 0.1]]])
    assert _roundtrip(DARKCodec(), pts)[0].tolist() == [[0.0, 32.0], [63.0, 10.0], [20.0, 0.0]]


def test_dark_refines_a_network_style_peak() -> None:
    # an anisotropic, correlated Gaussian plus a constant floor: still recovered closely
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(H).float(),
                            indexing="ij")
    mx, my = 30.37, 17.81
    dx, dy = xs - mx, ys - my
    heat = torch.exp(-(dx**2 / 4.0 + dy**2 / 2.0 + 0.3 * dx * dy) / 2)[None, None, None]
    pts = DARKCodec(blur_kernel=0).decode(NetOutput(heatmaps=heat)).landmarks
    assert torch.allclose(pts, torch.tensor([[[mx, my]]]), atol=1e-3)
    argmax = ArgmaxCodec().decode(NetOutput(heatmaps=heat)).landmarks
    assert (argmax - torch.tensor([mx, my])).abs().max() > 0.15


def test_soft_argmax_bound() -> None:
    # Measured bound, not a free parameter: with beta=16 and sigma=1.5 the peak of
    # exp(beta*g) has variance s2 = 1.5^2/16 ~ 0.14, and a discrete expectation of such a
    # narrow peak is biased toward the nearest pixel by up to 4*pi*s2*exp(-2*pi^2*s2) ~ 0.11 px
    # (the background pull, ~0.02 px, adds a little). Observed max ~0.111 px; bound 0.13.
    codec = SoftArgmaxCodec()
    pts = _points(b=8, n=98, hi=H - 1.0, seed=10)
    err = (_roundtrip(codec, pts) - pts).abs()
    assert err.max() < 0.13 and err.mean() < 0.08
    # a too-small beta lets the flat background drag points to the map centre
    assert (_roundtrip(SoftArgmaxCodec(beta=5.0), pts) - pts).abs().max() > 5
    t = codec.encode(torch.tensor([[[-2.0, 70.0]]]))
    assert t["coords"].tolist() == [[[0.0, 63.0]]]


def test_soft_argmax_gradient_is_the_closed_form() -> None:
    # x_hat = sum_j x_j w_j with w = softmax(beta h), so d x_hat / d h_j = beta w_j (x_j - x_hat)
    # (and the same for y). The codec works in float32, so gradcheck's float64 finite
    # differences do not apply; the closed form, computed in float64, does.
    beta, size = 16.0, 8
    g = torch.Generator().manual_seed(14)
    heat = (torch.rand(2, 3, size, size, generator=g) * 0.3).requires_grad_(True)
    upstream = torch.randn(2, 3, 2, generator=g)
    coords = SoftArgmaxCodec(heatmap_size=size, beta=beta).soft_argmax(heat)
    (coords * upstream).sum().backward()
    w = torch.softmax(beta * heat.detach().double().flatten(-2), dim=-1).unflatten(-1,
                                                                                (size, size))
    grid = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    x_hat = (w * xs).sum(dim=(-2, -1), keepdim=True)
    y_hat = (w * ys).sum(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(coords.double(), torch.cat([x_hat, y_hat], -1).squeeze(-2),
                               rtol=0, atol=1e-5)
    expect = beta * w * (upstream[..., 0, None, None].double() * (xs - x_hat)
                         + upstream[..., 1, None, None].double() * (ys - y_hat))
    torch.testing.assert_close(heat.grad.double(), expect, rtol=1e-4, atol=1e-6)


def test_offset_codec_fc_and_maps() -> None:
    pts = torch.cat([_points(seed=11), _hard_points().expand(4, -1, -1)], dim=1)
    for maps in (False, True):
        codec = OffsetCodec(offset_maps=maps)
        out = codec.ideal_output(pts)
        assert out.offsets.dim() == (5 if maps else 3)
        got = codec.decode(out).landmarks
        inside = pts.clamp(0, H - 1e-3)
        assert (got - inside).abs().max() < 1e-5
    t = OffsetCodec().encode(torch.tensor([[[12.25, 70.0]]]))
    assert t["integer"].tolist() == [[[12, 63]]]
    assert t["offsets"][0, 0, 0] == 0.25 and t["offsets"][0, 0, 1] < 1.0


def test_offset_maps_are_read_at_the_argmax() -> None:
    heat = torch.zeros(1, 2, 1, H, H)
    heat[0, 1, 0, 40, 5] = 1.0
    maps = torch.rand(1, 1, 2, H, H)
    got = OffsetCodec().decode(NetOutput(heatmaps=heat, offsets=maps)).landmarks
    expect = torch.tensor([5.0, 40.0]) + maps[0, 0, :, 40, 5]
    assert torch.allclose(got[0, 0], expect)


ALL_CODECS = [HIHCodec(), HIHCodec(decimal_size=4, published_compat=True), ArgmaxCodec(),
              QuarterShiftCodec(), DARKCodec(), SoftArgmaxCodec(), OffsetCodec(),
              OffsetCodec(offset_maps=True), RandomizedRoundingCodec()]


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: repr(c))
def test_batched_shapes(codec: Codec) -> None:
    b, n, s = 3, 5, 2
    pts = _points(b=b, n=n, lo=2.0, hi=H - 3.0, seed=12)
    t = codec.encode(pts)
    assert t["heatmaps"].shape == (b, n, H, H) and t["heatmaps"].dtype == torch.float32
    if "decimals" in t:
        k = codec.decimal_size
        assert t["decimals"].shape == (b, n, k, k)
        assert t["decimal_labels"].shape == (b, n, k * k)
    if "integer" in t:
        assert t["integer"].shape == (b, n, 2) and t["integer"].dtype == torch.long
    for key in ("offsets", "coords"):
        if key in t:
            assert t[key].shape == (b, n, 2)
    out = codec.ideal_output(pts)
    out.heatmaps = out.heatmaps.expand(b, s, n, H, H)
    dec = codec.decode(out)
    assert isinstance(dec, Decoded)
    assert dec.landmarks.shape == (b, n, 2) and dec.scores.shape == (b, n)
    assert dec.landmarks.dtype == torch.float32
    # batching does not change any single landmark's result
    one = codec.decode(codec.ideal_output(pts[1:2, 3:4])).landmarks
    assert torch.allclose(one[0, 0], dec.landmarks[1, 3], atol=1e-6)


def test_renderer_window_and_sub_pixel_centre() -> None:
    c = torch.tensor([[2.5, 3.0]])
    g = render_gaussians(c, 8, 8, 1.0)
    assert g.shape == (1, 8, 8) and torch.equal(g[0, 3, 2], g[0, 3, 3])
    lo, hi = torch.tensor([[1, 1]]), torch.tensor([[3, 4]])
    w = render_gaussians(c, 8, 8, 1.0, lo=lo, hi=hi)
    assert w[0, 3, 4] == 0 and w[0, 5, 3] == 0 and w[0, 4, 3] > 0 and w[0, 1, 1] > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flat_argmax_matches_a_flat_argmax_with_ties(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(13)
    maps = torch.randint(0, 4, (3, 7, 9, 11), generator=g).to(dtype)  # many ties
    ix, iy, val = flat_argmax(maps)
    ref = maps.float().flatten(-2).argmax(-1)
    assert torch.equal(iy * 11 + ix, ref)
    assert torch.equal(val, maps.float().flatten(-2).amax(-1))


def test_gather_patch_zero_pads_outside_the_map() -> None:
    maps = torch.arange(1.0, 26.0).reshape(1, 5, 5)
    patch = gather_patch(maps, torch.tensor([0]), torch.tensor([4]), 1)[0]
    assert patch.tolist() == [[0.0, 16.0, 17.0], [0.0, 21.0, 22.0], [0.0, 0.0, 0.0]]
