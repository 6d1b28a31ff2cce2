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
