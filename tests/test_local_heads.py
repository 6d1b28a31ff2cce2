"""HIH-local (a k x k decimal map at every pixel) and SimCC: heads, gathers, codecs, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hih_lightning import build_model
from hih_lightning.codecs import HIHCodec, SimCCCodec
from hih_lightning.codecs.hih import read_decimal_maps
from hih_lightning.losses import LandmarkLoss, csc_loss, simcc_kl
from hih_lightning.models.heads import LocalDecimalHead
from hih_lightning.models.output import NetOutput

H = 16


def _points(b: int, n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 2, generator=g) * (size - 1e-3)


# -- the local head ---------------------------------------------------------------------------
def test_local_head_sees_only_a_5x5_window_of_the_feature() -> None:
    """Two 3x3 convs: a pixel's decimal logits depend on the feature within +-2 px only.

    Eval mode: in training, BatchNorm's batch statistics couple every pixel (as in any
    conv net), which is not what locality is about.
    """
    torch.manual_seed(0)
    head = LocalDecimalHead(in_ch=6, num_landmarks=3, decimal_size=4, channels=8).eval()
    x = torch.randn(1, 6, H, H)
    px, py = 5, 9
    with torch.no_grad():
        base = head(x).maps()[..., py, px]                        # (1, 3, 4, 4)
        outside = x.clone()
        window = torch.zeros(H, H, dtype=torch.bool)
        window[py - 2:py + 3, px - 2:px + 3] = True
        outside[..., ~window] = torch.randn_like(outside[..., ~window]) * 10
        assert torch.equal(head(outside).maps()[..., py, px], base)
        # one feature value on the window's edge does change them
        edge = x.clone()
        edge[0, :, py + 2, px - 2] += 5.0
        assert (head(edge).maps()[..., py, px] - base).abs().max() > 1e-4
        edge = x.clone()
        edge[0, :, py + 3, px] += 5.0                             # one row beyond: no change
        assert torch.equal(head(edge).maps()[..., py, px], base)


def test_local_head_output_layout_and_translation_equivariance() -> None:
    torch.manual_seed(1)
    head = LocalDecimalHead(in_ch=4, num_landmarks=2, decimal_size=2, channels=8).eval()
    x = torch.zeros(1, 4, H, H)
    x[0, :, 3:6, 3:6] = torch.randn(4, 3, 3)
    with torch.no_grad():
        out = head(x).maps()
        shifted = head(torch.roll(x, shifts=(4, 5), dims=(-2, -1))).maps()
    assert out.shape == (1, 2, 2, 2, H, H)
    # the same pattern 4 rows down and 5 columns right gives the same logits there
    assert torch.allclose(shifted[..., 8, 9], out[..., 4, 4], atol=1e-6)
    # the maps are the head's 1x1 conv at every pixel; channel order landmark-major, cy, cx
    flat = head.predict(head.local(x))
    assert torch.allclose(out[0, 1, 0, 1], flat[0, 1 * 4 + 0 * 2 + 1], atol=1e-6)
    assert torch.allclose(out.flatten(1, 3), flat, atol=1e-6)


def test_local_decimals_at_a_pixel_equal_the_conv_there_for_every_landmark() -> None:
    """What the loss and decode read (``at``) equals the full 1x1 conv read by a loop."""
    torch.manual_seed(8)
    b, n, k = 3, 5, 4
    head = LocalDecimalHead(in_ch=6, num_landmarks=n, decimal_size=k, channels=8)
    x = torch.randn(b, 6, H, H)
    out = head(x)
    full = head.predict(out.features)                             # (B, N*k*k, H, W)
    g = torch.Generator().manual_seed(9)
    ix, iy = torch.randint(0, H, (b, n), generator=g), torch.randint(0, H, (b, n), generator=g)
    got = read_decimal_maps(out, ix, iy)
    assert got.shape == (b, n, k, k)
    for i in range(b):
        for j in range(n):
            expect = full[i, j * k * k:(j + 1) * k * k, iy[i, j], ix[i, j]].reshape(k, k)
            assert torch.allclose(got[i, j], expect, atol=1e-5)
    # the gradient reaches the 1x1 weights through the read
    got.sum().backward()
    assert head.predict.weight.grad.abs().sum() > 0


def test_read_decimal_maps_equals_a_per_landmark_loop() -> None:
    g = torch.Generator().manual_seed(2)
    b, n, k = 3, 5, 4
    maps = torch.randn(b, n, k, k, H, H, generator=g)
    ix = torch.randint(0, H, (b, n), generator=g)
    iy = torch.randint(0, H, (b, n), generator=g)
    got = read_decimal_maps(maps, ix, iy)
    for i in range(b):
        for j in range(n):
            assert torch.equal(got[i, j], maps[i, j, :, :, iy[i, j], ix[i, j]])
    global_logits = torch.randn(b, n, k, k, generator=g)
    assert read_decimal_maps(global_logits, ix, iy) is global_logits


@pytest.mark.parametrize("k", [2, 4, 8])
def test_hih_local_roundtrip_within_half_a_decimal_cell(k: int) -> None:
    """encode -> a perfect local head (every pixel holds the landmark's decimal map) -> decode."""
    codec = HIHCodec(heatmap_size=H, decimal_size=k)
    pts = _points(4, 30, H, seed=3)
    ideal = codec.ideal_output(pts)
    # a perfect head predicts the right map at the landmark's pixel; noise everywhere else
    maps = torch.randn(4, 30, k, k, H, H)
    integer = codec.encode(pts)["integer"]
    b_idx, n_idx = torch.meshgrid(torch.arange(4), torch.arange(30), indexing="ij")
    maps[b_idx, n_idx, :, :, integer[..., 1], integer[..., 0]] = ideal.decimals
    got = codec.decode(NetOutput(heatmaps=ideal.heatmaps, decimals=maps)).landmarks
    assert (got - pts).abs().max() <= 1 / (2 * k) + 1e-5
    diag = codec.diagnostics(NetOutput(heatmaps=ideal.heatmaps, decimals=maps), pts)
    assert diag["decimal_hit"].all()


def test_local_loss_reads_the_true_pixel_and_equals_csc_there() -> None:
    g = torch.Generator().manual_seed(4)
    codec = HIHCodec(heatmap_size=H, decimal_size=4)
    pts = _points(2, 6, H, seed=5)
    targets = codec.encode(pts)
    maps = torch.randn(2, 6, 4, 4, H, H, generator=g)
    out = NetOutput(heatmaps=torch.zeros(2, 1, 6, H, H), decimals=maps)
    loss = LandmarkLoss()(out, targets)
    read = torch.stack([torch.stack([maps[i, j, :, :, targets["integer"][i, j, 1],
                                          targets["integer"][i, j, 0]] for j in range(6)])
                        for i in range(2)])
    assert torch.allclose(loss["csc"], csc_loss(read, targets["decimal_labels"]))
    # only the read pixels carry gradient
    maps.requires_grad_(True)
    LandmarkLoss()(NetOutput(heatmaps=torch.zeros(2, 1, 6, H, H), decimals=maps),
                   targets)["loss"].backward()
    touched = (maps.grad.abs().sum(dim=(2, 3)) > 0).sum()
    assert int(touched) == len({(i, j, *targets["integer"][i, j].tolist())
                                for i in range(2) for j in range(6)})


def test_hih_local_net_trains_the_local_head_and_counts_its_parameters() -> None:
    net = build_model("hih_cpu", num_landmarks=5, decimal_size=4, input_size=64,
                      head="hih_local")
    out = net(torch.randn(2, 3, 64, 64))
    assert out.heatmaps.shape == (2, 1, 5, H, H)
    assert out.decimals.maps().shape == (2, 5, 4, 4, H, H)
    (out.heatmaps.sum() + out.decimals.maps().sum()).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    c, w = 128, 128  # hourglass width, local_channels
    head = (c * w * 9 + 2 * w) + (w * w * 9 + 2 * w) + (w * 5 * 16 + 5 * 16)
    assert sum(p.numel() for p in net.head.parameters()) == head


# -- SimCC ------------------------------------------------------------------------------------
def test_simcc_labels_are_normalised_gaussians_on_the_bins() -> None:
    codec = SimCCCodec(heatmap_size=H, split_ratio=2.0, stride=4, label_sigma=0.5)
    assert codec.bins == 128 and codec.bins_per_pixel == 8.0
    pts = torch.tensor([[[3.3, 10.0]]])
    labels = codec.encode(pts)["simcc_labels"]
    assert labels.shape == (1, 1, 2, 128)
    assert torch.allclose(labels.sum(-1), torch.ones(1, 1, 2))
    bins = torch.arange(128.0)
    expect = torch.exp(-0.5 * ((bins - 3.3 * 8) / 4.0) ** 2)
    assert torch.allclose(labels[0, 0, 0], expect / expect.sum(), atol=1e-7)
    assert int(labels[0, 0, 0].argmax()) == 26 and int(labels[0, 0, 1].argmax()) == 80


def test_simcc_roundtrip_within_half_a_bin() -> None:
    codec = SimCCCodec(heatmap_size=H)
    last = (codec.bins - 1) / codec.bins_per_pixel                    # 15.875: the last bin
    pts = torch.cat([_points(4, 50, H, seed=6).clamp(max=last + 0.5 / codec.bins_per_pixel),
                     torch.tensor([[[0.0, H - 1.0], [7.0625, 3.0]]]).expand(4, -1, -1)], dim=1)
    got = codec.decode(codec.ideal_output(pts)).landmarks
    half_bin = 0.5 / codec.bins_per_pixel
    assert (got - pts).abs().max() <= half_bin + 1e-6
    assert torch.allclose(got[0, -1], torch.tensor([7.0, 3.0]))   # 7.0625 is on bin 56.5 -> 56
    # beyond the last bin's half (15.9375 .. 16) a point decodes to the last bin
    edge = codec.decode(codec.ideal_output(torch.tensor([[[H - 1e-3, 0.0]]]))).landmarks
    assert edge.tolist() == [[[last, 0.0]]]
    dec = codec.decode(codec.ideal_output(pts))
    assert dec.scores.shape == (4, 52) and (dec.scores > 0).all()


def test_simcc_kl_matches_a_hand_computation_and_the_loss_term() -> None:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 2, 10, generator=g)
    labels = torch.softmax(torch.randn(2, 3, 2, 10, generator=g), -1)
    logq = F.log_softmax(logits, -1)
    hand = (labels * (labels.log() - logq)).sum(-1).mean()
    assert math.isclose(float(simcc_kl(logits, labels)), float(hand), rel_tol=1e-5)
    assert float(simcc_kl(labels.log(), labels)) < 1e-6
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    kl = (labels * (labels.log() - logq)).sum(-1)
    assert math.isclose(float(simcc_kl(logits, labels, weights)),
                        float((kl * weights[..., None]).mean()), rel_tol=1e-5)
    out = NetOutput(heatmaps=torch.zeros(2, 1, 3, 4, 4), simcc=logits)
    targets = {"heatmaps": torch.zeros(2, 3, 4, 4), "simcc_labels": labels}
    terms = LandmarkLoss(decimal="none", simcc_weight=0.5)(out, targets)
    assert torch.allclose(terms["loss"], terms["heatmap"] + 0.5 * terms["simcc"])
    with pytest.raises(ValueError, match="SimCC"):
        LandmarkLoss(decimal="none")(NetOutput(heatmaps=out.heatmaps), targets)


def test_simcc_net_output() -> None:
    net = build_model("hih_cpu", num_landmarks=5, input_size=64, head="simcc", split_ratio=2.0)
    out = net(torch.randn(2, 3, 64, 64))
    assert out.simcc.shape == (2, 5, 2, 128) and out.decimals is None
    # x and y are classified by their own layers: one layer for both would give one answer
    assert (out.simcc[:, :, 0] - out.simcc[:, :, 1]).abs().max() > 1e-3
    out.simcc.sum().backward()
    assert net.head.x.weight.grad.abs().sum() > 0
    assert net.head.y.weight.grad.abs().sum() > 0
