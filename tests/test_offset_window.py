"""Offset maps with a window (issue 28's regression peer of HIH-local's window): the maps are
trained at every pixel within r of the true one, each on the offset from itself to the
landmark, so the plain decode (argmax + offset read there) repairs an argmax up to r off.

What it must do: targets that put every trained pixel back onto the landmark (hand check),
round trip exactly, point a wrong argmax back, leave pixels off the map out of the loss, sum
the L1 over the trained pixels (weight per pixel), and train from the composed config.
"""

from __future__ import annotations

import pytest
import torch

from hih_lightning import build_model
from hih_lightning.codecs import OffsetCodec
from hih_lightning.config import instantiate_node
from hih_lightning.losses import LandmarkLoss
from hih_lightning.models.output import NetOutput

H = 16


def _points(b: int, n: int, seed: int, lo: float = 0.0, hi: float = H - 1e-3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + torch.rand(b, n, 2, generator=g) * (hi - lo)


def _peaks(at: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, H, W) heatmaps whose argmax is the integer pixel ``at`` (B, N, 2)."""
    b, n, _ = at.shape
    hm = torch.zeros(b, 1, n, H, H)
    for bi in range(b):
        for ni in range(n):
            hm[bi, 0, ni, at[bi, ni, 1], at[bi, ni, 0]] = 1.0
    return hm


def test_targets_point_every_trained_pixel_at_the_landmark() -> None:
    codec = OffsetCodec(heatmap_size=H, window=1)
    pts = torch.tensor([[[6.25, 5.5], [0.3, 15.75]]])                  # inside; a corner
    t = codec.encode(pts)
    assert t["offsets"].shape == (1, 2, 9, 2) and t["offset_pixels"].shape == (1, 2, 9, 2)
    # row-major from (-1, -1): entry 0 is pixel (5, 4) for the first landmark
    assert t["offset_pixels"][0, 0, 0].tolist() == [5, 4]
    assert torch.allclose(t["offsets"][0, 0, 0], torch.tensor([1.25, 1.5]))
    assert torch.allclose(t["offsets"][0, 0, 4], torch.tensor([0.25, 0.5]))  # centre: f
    ok = t["offset_valid"][0, 0]
    assert ok.all()
    assert torch.allclose(t["offset_pixels"][0, 0] + t["offsets"][0, 0], pts[0, 0].expand(9, 2))
    # corner (0, 15): the pixels at x = -1 or y = 16 are off the map
    assert t["offset_valid"][0, 1].tolist() == [False, True, True, False, True, True,
                                                False, False, False]
    plain = OffsetCodec(heatmap_size=H).encode(pts)                    # r = 0 unchanged
    assert plain["offsets"].shape == (1, 2, 2) and "offset_pixels" not in plain


@pytest.mark.parametrize("r", [1, 2])
def test_roundtrip_and_a_wrong_argmax_pointed_back(r: int) -> None:
    codec = OffsetCodec(heatmap_size=H, window=r)
    pts = _points(2, 7, seed=1, lo=2.0, hi=H - 2.0)
    ideal = codec.ideal_output(pts)
    assert ideal.offsets.shape == (2, 7, 2, H, H)
    assert torch.allclose(codec.decode(ideal).landmarks, pts, atol=1e-5)
    for step in ((1, 0), (-1, 1), (0, -r)):
        wrong = torch.floor(pts).long() + torch.tensor(step)
        got = codec.decode(NetOutput(heatmaps=_peaks(wrong), offsets=ideal.offsets)).landmarks
        assert torch.allclose(got, pts, atol=1e-5)
    # CenterNet's maps (trained at the true pixel only, constant f) cannot repair it
    centre = OffsetCodec(heatmap_size=H, offset_maps=True).ideal_output(pts).offsets
    wrong = torch.floor(pts).long() + torch.tensor([1, 0])
    got = codec.decode(NetOutput(heatmaps=_peaks(wrong), offsets=centre)).landmarks
    assert torch.allclose(got - pts, torch.tensor([1.0, 0.0]).expand_as(pts), atol=1e-5)


def test_loss_sums_l1_over_the_trained_pixels_on_the_map() -> None:
    codec = OffsetCodec(heatmap_size=H, window=1)
    pts = torch.tensor([[[6.25, 5.5], [0.3, 15.75]]])
    t = codec.encode(pts)
    loss = LandmarkLoss(decimal="none", offset_weight=1.0)
    ideal = codec.ideal_output(pts)
    assert loss(ideal, t)["offset"].item() == pytest.approx(0.0, abs=1e-6)
    zeros = torch.zeros(1, 2, 2, H, H, requires_grad=True)
    got = loss(NetOutput(heatmaps=ideal.heatmaps, offsets=zeros), t)["offset"]
    # by hand: sum over the valid pixels of |p - pixel|, per axis, mean over N and the 2 axes
    hand = 0.0
    for n in range(2):
        for j in range(9):
            if t["offset_valid"][0, n, j]:
                hand += (pts[0, n] - t["offset_pixels"][0, n, j]).abs().sum().item()
    assert got.item() == pytest.approx(hand / 4, rel=1e-5)
    got.backward()
    touched = zeros.grad.abs().sum(dim=2) > 0                          # (1, N, H, W)
    assert touched.sum(dim=(2, 3)).tolist() == [[9, 4]]                # 9 pixels; 4 at the corner


def test_a_window_needs_offset_maps_and_trains_from_the_composed_config(compose_cfg) -> None:
    cfg = compose_cfg("model/codec=offset_map", "model.codec.window=1")
    model = instantiate_node(cfg, "model")
    assert model.codec.window == 1
    size, n = int(cfg.model.net.input_size), int(cfg.model.net.num_landmarks)
    images = torch.randn(2, 3, size, size)
    pts = torch.rand(2, n, 2) * (model.codec.heatmap_size - 1)
    out = model.net(images)
    terms = model.loss(out, model.codec.encode(pts))
    assert torch.isfinite(terms["loss"]) and terms["offset"] > 0
    fc = build_model("hih_cpu", num_landmarks=3, decimal_size=4, input_size=64, head="fc")
    with pytest.raises(ValueError, match="offset_map"):
        LandmarkLoss(decimal="none")(fc(torch.randn(1, 3, 64, 64)),
                                     OffsetCodec(heatmap_size=16, window=1).encode(
                                         _points(1, 3, seed=2)))
    with pytest.raises(ValueError, match="window"):
        OffsetCodec(window=-1)


def test_vote_is_the_heatmap_weighted_mean_of_the_window_pixels_estimates() -> None:
    """offset_decode='vote': each pixel within r of the argmax says pixel + its offset; the
    landmark is their mean weighted by the integer heatmap there (hand computation)."""
    codec = OffsetCodec(heatmap_size=H, window=1, offset_decode="vote")
    hm = torch.zeros(1, 1, 1, H, H)
    hm[0, 0, 0, 5, 6] = 1.0                         # argmax at (x 6, y 5)
    hm[0, 0, 0, 5, 7] = 0.5                         # right neighbour
    hm[0, 0, 0, 4, 6] = -0.3                        # a negative weight counts 0
    hm[0, 0, 0, 5, 9] = 0.9                         # outside the window: not read
    maps = torch.zeros(1, 1, 2, H, H)
    maps[0, 0, :, 5, 6] = torch.tensor([0.2, 0.4])  # says (6.2, 5.4)
    maps[0, 0, :, 5, 7] = torch.tensor([-0.5, 0.1])  # says (6.5, 5.1)
    maps[0, 0, :, 4, 6] = torch.tensor([3.0, 3.0])  # would say (9, 7) if it counted
    got = codec.decode(NetOutput(heatmaps=hm, offsets=maps)).landmarks[0, 0]
    hand = (1.0 * torch.tensor([6.2, 5.4]) + 0.5 * torch.tensor([6.5, 5.1])) / 1.5
    assert torch.allclose(got, hand, atol=1e-6)
    pixel = OffsetCodec(heatmap_size=H, window=1).decode(NetOutput(heatmaps=hm, offsets=maps))
    assert torch.allclose(pixel.landmarks[0, 0], torch.tensor([6.2, 5.4]))
    # at the corner the window's pixels off the map (clipped onto the border) vote not at all
    hm = torch.zeros(1, 1, 1, H, H)
    hm[0, 0, 0, 0, 0], hm[0, 0, 0, 0, 1] = 1.0, 0.5
    maps = torch.zeros(1, 1, 2, H, H)
    maps[0, 0, :, 0, 0] = torch.tensor([0.2, 0.3])
    maps[0, 0, :, 0, 1] = torch.tensor([-0.4, 0.6])
    got = codec.decode(NetOutput(heatmaps=hm, offsets=maps)).landmarks[0, 0]
    hand = (1.0 * torch.tensor([0.2, 0.3]) + 0.5 * torch.tensor([0.6, 0.6])) / 1.5
    assert torch.allclose(got, hand, atol=1e-6)


def test_vote_round_trips_repairs_a_wrong_argmax_and_stays_on_the_map_at_a_corner() -> None:
    codec = OffsetCodec(heatmap_size=H, window=1, offset_decode="vote")
    pts = torch.cat((_points(2, 6, seed=3, lo=1.0, hi=H - 1.0),
                     torch.tensor([[[0.2, 15.9]], [[15.5, 0.1]]])), dim=1)   # corners
    ideal = codec.ideal_output(pts)
    assert torch.allclose(codec.decode(ideal).landmarks, pts, atol=1e-5)
    # a one-pixel peak one pixel off: the votes of the window all point at the landmark
    wrong = torch.floor(pts).long() + torch.tensor([1, 0])
    wrong[..., 0].clamp_(max=H - 1)
    got = codec.decode(NetOutput(heatmaps=_peaks(wrong), offsets=ideal.offsets)).landmarks
    assert torch.allclose(got, pts, atol=1e-5)
    # an all-negative heatmap falls back to the argmax pixel's (here 0, 0) own estimate
    maps = torch.randn(2, 7, 2, H, H)
    got = codec.decode(NetOutput(heatmaps=-torch.ones(2, 1, 7, H, H), offsets=maps)).landmarks
    assert torch.allclose(got, maps[..., 0, 0], atol=1e-6)


def test_vote_is_refused_without_a_window_and_composes_from_the_config(compose_cfg) -> None:
    with pytest.raises(ValueError, match="model.codec.offset_decode"):
        OffsetCodec(window=0, offset_decode="vote")
    with pytest.raises(ValueError, match="offset_decode must be one of"):
        OffsetCodec(window=1, offset_decode="mean")
    cfg = compose_cfg("model/codec=offset_map", "model.codec.window=1",
                      "model.codec.offset_decode=vote")
    assert instantiate_node(cfg, "model").codec.offset_decode == "vote"
    assert compose_cfg("model/codec=offset_map").model.codec.offset_decode == "pixel"
