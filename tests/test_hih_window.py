"""HIH-local with a window (issue 28): a decimal heatmap spanning (2r+1)^2 integer pixels.

What it must do: name the landmark's cell from any pixel within r of it (so an integer argmax
r pixels off is repaired), never move a landmark further than the window, and be trained at
every pixel of the window with the target as seen from that pixel.
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


def _maps_from_targets(codec: HIHCodec, pts: torch.Tensor, seed: int) -> torch.Tensor:
    """A perfect windowed local head: every read pixel of the window holds the target as seen
    from there (the soft label's logits); noise at every other pixel. (B, N, K, K, H, W)."""
    t = codec.encode(pts)
    pixels = t.get("decimal_pixels", t["integer"].unsqueeze(2))     # r = 0: the true pixel
    b, n, m, _ = pixels.shape
    big = codec.window_cells
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, n, big, big, H, H, generator=g) * 0.01
    logits = t["decimal_labels"].log().reshape(b, n, m, big, big)
    for bi in range(b):
        for ni in range(n):
            for mi in range(m):
                x, y = pixels[bi, ni, mi].tolist()
                maps[bi, ni, :, :, y, x] = logits[bi, ni, mi]
    return maps


def _heatmap_peaks(at: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, H, W) heatmaps whose argmax is the integer pixel ``at`` (B, N, 2)."""
    b, n, _ = at.shape
    hm = torch.zeros(b, 1, n, H, H)
    for bi in range(b):
        for ni in range(n):
            hm[bi, 0, ni, at[bi, ni, 1], at[bi, ni, 0]] = 1.0
    return hm


@pytest.mark.parametrize(("k", "r"), [(2, 1), (4, 1), (4, 2)])
def test_window_roundtrip_within_half_a_cell_and_encode_is_stable(k: int, r: int) -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    pts = _points(3, 20, seed=1)
    got = codec.decode(codec.ideal_output(pts)).landmarks
    assert (got - pts).abs().max() <= 1 / (2 * k) + 1e-5
    again = codec.encode(got)
    for key, value in codec.encode(pts).items():
        assert torch.equal(value, again[key]), key


@pytest.mark.parametrize("r", [1, 2])
def test_each_read_pixel_targets_the_landmarks_cell_as_seen_from_it(r: int) -> None:
    """Hand computation: label argmax c at read pixel j names j - r + (c + 0.5) / k, which is
    the centre of the landmark's own cell, for all (2r+1)^2 pixels (clipped at the border)."""
    k = 4
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, soft_label="gaussian")
    pts = torch.tensor([[[7.30, 9.80], [0.10, 15.95], [15.5, 0.6]]])
    t = codec.encode(pts)
    assert t["decimal_pixels"].shape == (1, 3, (2 * r + 1) ** 2, 2)
    assert t["decimal_labels"].shape == (1, 3, (2 * r + 1) ** 2, codec.window_cells ** 2)
    assert int(t["decimal_pixels"].min()) == 0 and int(t["decimal_pixels"].max()) == H - 1
    big = codec.window_cells
    cell = t["decimal_labels"].argmax(-1)
    named = t["decimal_pixels"] - r + (torch.stack((cell % big, cell // big), -1) + 0.5) / k
    centre = (torch.floor(pts * k) + 0.5) / k
    assert torch.allclose(named, centre.unsqueeze(2).expand_as(named))
    # the true pixel is the middle read
    assert torch.equal(t["decimal_pixels"][:, :, t["decimal_pixels"].shape[2] // 2],
                       t["integer"])


@pytest.mark.parametrize("step", [(1, 0), (-1, 1), (1, -1)])
def test_a_landmark_one_pixel_off_the_argmax_is_decoded_back_into_place(
        step: tuple[int, int]) -> None:
    k = 4
    pts = _points(2, 6, seed=3, lo=2.0, hi=H - 2.0)
    wrong = torch.floor(pts).long() + torch.tensor(step)
    for r, repaired in ((1, True), (0, False)):
        codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
        out = NetOutput(heatmaps=_heatmap_peaks(wrong), decimals=_maps_from_targets(codec, pts, 0))
        got = codec.decode(out).landmarks
        if repaired:
            assert (got - pts).abs().max() <= 1 / (2 * k) + 1e-5
            assert codec.diagnostics(out, pts)["decimal_hit"].all()
        else:                                     # today's HIH-local stays in the wrong pixel
            assert torch.equal(torch.floor(got).long(), wrong)


def test_the_window_is_local_a_decode_never_leaves_it() -> None:
    """Two pixels off with r = 1: the landmark is outside the window, the decode stays inside
    [argmax - r, argmax + r + 1) whatever the logits say."""
    k, r = 4, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    pts = _points(2, 6, seed=4, lo=3.0, hi=H - 3.0)
    wrong = torch.floor(pts).long() + torch.tensor([2, 0])
    g = torch.Generator().manual_seed(2)
    maps = torch.randn(2, 6, 12, 12, H, H, generator=g)
    out = NetOutput(heatmaps=_heatmap_peaks(wrong), decimals=maps)
    got = codec.decode(out).landmarks
    assert (got >= wrong - r).all() and (got < wrong + r + 1).all()
    assert ((got - pts)[..., 0] > 1 / (2 * k)).all()          # cannot reach back 2 px in x


def test_window_loss_reads_every_window_pixel_and_equals_csc_there() -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=2, window=1)
    pts = torch.tensor([[[0.2, 5.7], [9.4, 9.9]], [[15.9, 15.1], [3.3, 12.6]]])
    t = codec.encode(pts)
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(2, 2, 6, 6, H, H, generator=g, requires_grad=True)
    out = NetOutput(heatmaps=torch.zeros(2, 1, 2, H, H), decimals=maps)
    loss = LandmarkLoss()(out, t)
    px = t["decimal_pixels"]
    read = torch.stack([torch.stack([torch.stack([maps[b, n, :, :, px[b, n, m, 1], px[b, n, m, 0]]
                                                  for m in range(9)]) for n in range(2)])
                        for b in range(2)])                                  # (2, 2, 9, 6, 6)
    want = csc_loss(read.flatten(1, 2), t["decimal_labels"].flatten(1, 2))
    assert torch.allclose(loss["csc"], want)
    loss["loss"].backward()
    touched = {(b, n, y, x) for b, n, y, x in
               (maps.grad.abs().sum(dim=(2, 3)) > 0).nonzero().tolist()}
    expect = {(b, n, px[b, n, m, 1].item(), px[b, n, m, 0].item())
              for b in range(2) for n in range(2) for m in range(9)}
    assert touched == expect
    assert len(expect) < 2 * 2 * 9                 # the border clipped some reads together


def test_windowed_net_has_the_window_sized_head_and_mismatches_are_named() -> None:
    torch.manual_seed(0)
    kwargs = dict(num_landmarks=5, decimal_size=4, input_size=64, head="hih_local")
    plain = build_model("hih_cpu", **kwargs)
    windowed = build_model("hih_cpu", decimal_window=1, **kwargs)
    out = windowed(torch.randn(2, 3, 64, 64))
    assert out.decimals.at(torch.zeros(2, 5, dtype=torch.long),
                           torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 12, 12)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_windowed = sum(p.numel() for p in windowed.parameters())
    assert n_windowed - n_plain == 5 * (144 - 16) * (128 + 1)    # the 1x1 conv's new classes
    pts = _points(2, 5, seed=6)
    targets = HIHCodec(heatmap_size=H, decimal_size=4, window=1).encode(pts)
    assert torch.isfinite(LandmarkLoss()(out, targets)["loss"])
    with pytest.raises(ValueError, match="decimal_window"):
        HIHCodec(heatmap_size=H, decimal_size=4, window=0).decode(out)
    with pytest.raises(ValueError, match="decimal_window"):
        build_model("hih_cpu", num_landmarks=5, head="hih", decimal_window=1)
    with pytest.raises(ValueError, match="window"):
        HIHCodec(window=1, published_compat=True)


# -- the mosaic window: the plain local head's k x k maps of the window's pixels, one softmax --
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
def test_mosaic_roundtrip_within_half_a_cell_at_the_border_too(k: int, r: int) -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, mosaic=True)
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


def test_mosaic_read_is_the_pixel_shuffled_map_around_the_pixel() -> None:
    k, r = 4, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, mosaic=True)
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


def test_mosaic_repairs_a_wrong_argmax_and_never_decodes_off_the_map() -> None:
    """A perfect pixel-shuffled decimal map (peak at the landmark's cell of the fine map) read
    one pixel off the argmax names the landmark; at the corner, the clipped reads repeat the
    edge pixel but their cells are masked, so the decode stays on the map."""
    k, r = 4, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, mosaic=True)
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


def test_mosaic_loss_is_csc_on_the_fine_map_around_the_true_pixel() -> None:
    k, r = 2, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, mosaic=True,
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
    assert torch.allclose(loss["csc"], csc_loss(crops, t["decimal_labels"]))
    loss["loss"].backward()
    touched = (maps.grad.abs().sum(dim=(2, 3)) > 0)                     # (B, N, H, W)
    assert touched.sum(dim=(2, 3)).tolist() == [[25, 25], [25, 25]]     # the 5 x 5 pixels
