"""HIH-local with a window (issue 28): the decimal heatmap the decode reads is the mosaic of
the local head's k x k maps of the (2r+1)^2 pixels around the integer argmax, one softmax.

What it must do: round trip within half a cell (at the border too, where pixels off the map
are masked), read exactly the pixel-shuffled map around the pixel, name the landmark's cell
from an argmax up to r pixels off (r = 0 cannot), never decode off the map, and train with
the CSC loss on the mosaic of radius 2r around the true pixel, at the scale of one pixel.
"""

from __future__ import annotations

import pytest
import torch

from hih_lightning import build_model
from hih_lightning.codecs import HIHCodec
from hih_lightning.losses import LandmarkLoss, csc_loss
from hih_lightning.models.output import NetOutput

H = 16


def _points(b: int, n: int, seed: int, lo: float = 0.0, hi: float = H - 1e-3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + torch.rand(b, n, 2, generator=g) * (hi - lo)


def _heatmap_peaks(at: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, H, W) heatmaps whose argmax is the integer pixel ``at`` (B, N, 2)."""
    b, n, _ = at.shape
    hm = torch.zeros(b, 1, n, H, H)
    for bi in range(b):
        for ni in range(n):
            hm[bi, 0, ni, at[bi, ni, 1], at[bi, ni, 0]] = 1.0
    return hm


def _fine(maps: torch.Tensor) -> torch.Tensor:
    """Per-pixel maps (B, N, k, k, H, W) as one (B, N, H*k, W*k) map, cell (cy, cx) of pixel
    (y, x) at row y*k + cy, column x*k + cx: the hand-made pixel shuffle."""
    b, n, k, _, h, w = maps.shape
    fine = torch.empty(b, n, h * k, w * k)
    for y in range(h):
        for x in range(w):
            fine[:, :, y * k:(y + 1) * k, x * k:(x + 1) * k] = maps[..., y, x]
    return fine


@pytest.mark.parametrize(("k", "r"), [(2, 1), (4, 1), (4, 2)])
def test_window_roundtrip_within_half_a_cell_at_the_border_too(k: int, r: int) -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    pts = torch.cat((_points(2, 20, seed=1), torch.tensor([[[0.05, 15.97], [15.9, 0.2]]] * 2)),
                    dim=1)
    got = codec.decode(codec.ideal_output(pts)).landmarks
    assert (got - pts).abs().max() <= 1 / (2 * k) + 1e-5
    t = codec.encode(pts)
    side = (4 * r + 1) * k                                    # trained on radius 2r
    assert t["decimal_labels"].shape == (2, 22, side * side)
    assert torch.allclose(t["decimal_labels"].sum(-1), torch.ones(2, 22))
    # no label mass on cells of pixels off the map: hand check on the corner landmarks
    labels = t["decimal_labels"][0, 20].reshape(side, side)     # x 0.05 -> pixel 0, y 15.97 -> 15
    reach = 2 * r
    assert labels[:, :reach * k].sum() == 0 and labels[(reach + 1) * k:, :].sum() == 0


def test_window_read_is_the_pixel_shuffled_map_around_the_pixel() -> None:
    k, r = 4, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    g = torch.Generator().manual_seed(7)
    maps = torch.randn(2, 3, k, k, H, H, generator=g)
    fine = _fine(maps)
    ix = torch.tensor([[5, 1, 14], [8, 9, 3]])
    iy = torch.tensor([[7, 12, 2], [1, 14, 10]])
    got = codec.read_window(maps, ix, iy)
    assert got.shape == (2, 3, 12, 12)
    for b in range(2):
        for n in range(3):
            x, y = ix[b, n].item(), iy[b, n].item()
            want = fine[b, n, (y - r) * k:(y + r + 1) * k, (x - r) * k:(x + r + 1) * k]
            assert torch.equal(got[b, n], want)


def test_window_repairs_a_wrong_argmax_and_never_decodes_off_the_map() -> None:
    """A perfect pixel-shuffled decimal map (peak at the landmark's cell of the fine map) read
    one pixel off the argmax names the landmark; at the corner, the clipped reads repeat the
    edge pixel but their cells are masked, so the decode stays on the map."""
    k, r = 4, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    pts = _points(2, 6, seed=3, lo=2.0, hi=H - 2.0)
    cells = torch.floor(pts * k).long()                                # fine-map cell (x, y)
    maps = torch.zeros(2, 6, k, k, H, H)
    for b in range(2):
        for n in range(6):
            cx, cy = cells[b, n].tolist()
            maps[b, n, cy % k, cx % k, cy // k, cx // k] = 5.0
    for step in ((1, 0), (-1, 1), (0, -1)):
        wrong = torch.floor(pts).long() + torch.tensor(step)
        got = codec.decode(NetOutput(heatmaps=_heatmap_peaks(wrong), decimals=maps)).landmarks
        assert (got - pts).abs().max() <= 1 / (2 * k) + 1e-5
    plain = HIHCodec(heatmap_size=H, decimal_size=k)                  # r = 0 cannot
    wrong = torch.floor(pts).long() + torch.tensor([1, 0])
    got = plain.decode(NetOutput(heatmaps=_heatmap_peaks(wrong), decimals=maps)).landmarks
    assert torch.equal(torch.floor(got).long(), wrong)
    corner = torch.zeros(1, 1, 2, dtype=torch.long)                  # argmax at pixel (0, 0)
    high = torch.full((1, 1, k, k, H, H), -1.0)
    high[..., 0, 0] = 0.0                                             # edge cells, repeated
    high[0, 0, k - 1, k - 1, 1, 1] = -0.5                             # best on-map elsewhere
    got = codec.decode(NetOutput(heatmaps=_heatmap_peaks(corner), decimals=high)).landmarks
    assert (got >= 0).all()
    assert torch.allclose(got, torch.tensor([[[0.5 / k, 0.5 / k]]]))


def test_window_loss_is_csc_on_the_fine_map_around_the_true_pixel() -> None:
    k, r = 2, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r,
                     soft_label="gaussian")
    pts = torch.tensor([[[6.2, 5.7], [9.4, 9.9]], [[8.9, 7.1], [3.3, 12.6]]])   # inside
    t = codec.encode(pts)
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(2, 2, k, k, H, H, generator=g, requires_grad=True)
    out = NetOutput(heatmaps=torch.zeros(2, 1, 2, H, H), decimals=maps)
    loss = LandmarkLoss()(out, t)
    fine, reach = _fine(maps), 2 * r
    crops = torch.stack([torch.stack([
        fine[b, n, (y - reach) * k:(y + reach + 1) * k, (x - reach) * k:(x + reach + 1) * k]
        for n, (x, y) in enumerate(t["integer"][b].tolist())]) for b in range(2)])
    assert torch.allclose(loss["csc"], 25 * csc_loss(crops, t["decimal_labels"]))  # M = 25
    loss["loss"].backward()
    touched = (maps.grad.abs().sum(dim=(2, 3)) > 0)                     # (B, N, H, W)
    assert touched.sum(dim=(2, 3)).tolist() == [[25, 25], [25, 25]]     # the 5 x 5 pixels


def test_the_head_keeps_its_size_and_mismatches_are_named() -> None:
    torch.manual_seed(0)
    net = build_model("hih_cpu", num_landmarks=5, decimal_size=4, input_size=64,
                      head="hih_local")
    out = net(torch.randn(2, 3, 64, 64))
    pts = _points(2, 5, seed=6)
    plain, windowed = HIHCodec(heatmap_size=H, decimal_size=4), HIHCodec(
        heatmap_size=H, decimal_size=4, window=1, soft_label="gaussian")
    assert plain.decode(out).landmarks.shape == windowed.decode(out).landmarks.shape == (2, 5, 2)
    got = windowed.decode(out).landmarks - (torch.stack(_argmax(out), -1) - 1)
    assert ((got >= 0) & (got < 3)).all()                   # within the 3 x 3 window
    assert torch.isfinite(LandmarkLoss()(out, windowed.encode(pts))["loss"])
    with pytest.raises(ValueError, match="decimal_size"):
        HIHCodec(heatmap_size=H, decimal_size=2, window=1).decode(out)
    with pytest.raises(ValueError, match="window"):
        HIHCodec(window=1, published_compat=True)
    with pytest.raises(ValueError, match="csc"):
        LandmarkLoss(decimal="mse")(out, windowed.encode(pts))


def _argmax(out: NetOutput) -> tuple[torch.Tensor, torch.Tensor]:
    flat = out.heatmaps[:, -1].flatten(2).argmax(-1)
    return flat % H, flat // H
