"""Network shapes, exact parameter counts and the published-checkpoint import."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from hih_lightning import build_model, load_published_checkpoint
from hih_lightning.models import parameter_counts
from hih_lightning.models.published import CheckpointMismatch
from published_reference import PublishedHIH

SHARED = Path(os.environ.get("HIH_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
LAYOUT = SHARED / "official_release" / "hih_state_dict_layout.txt"


@pytest.mark.parametrize(("variant", "used", "published"), [
    ("hih_t", 9_424_388, 10_365_700),
    ("hih_s", 12_603_494, 14_469_478),
    ("hih_b", 18_961_706, 22_677_034),
])
def test_parameter_counts_match_the_paper(variant, used, published):
    counts = parameter_counts(build_model(variant, num_landmarks=98, decimal_size=8))
    assert counts == {"used": used, "published": published}


def test_every_parameter_is_used_by_forward():
    model = build_model("hih_cpu", num_landmarks=5)
    out = model(torch.randn(1, 3, 128, 128))
    (out.heatmaps.sum() + out.decimals.sum()).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


@pytest.mark.parametrize("k", [4, 8, 16])
def test_output_shapes(k):
    model = build_model("hih_s", num_landmarks=98, decimal_size=k).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 256))
    assert out.heatmaps.shape == (2, 2, 98, 64, 64)
    assert out.decimals.shape == (2, 98, k, k)


def test_cpu_variant_and_alternative_heads():
    images = torch.randn(2, 3, 128, 128)
    out = build_model("hih_cpu", num_landmarks=7).eval()(images)
    assert out.heatmaps.shape == (2, 1, 7, 32, 32) and out.decimals.shape == (2, 7, 8, 8)
    fc = build_model("hih_cpu", num_landmarks=7, head="fc")(images)
    assert fc.offsets.shape == (2, 7, 2) and fc.decimals is None
    maps = build_model("hih_cpu", num_landmarks=7, head="offset_map")(images)
    assert maps.offsets.shape == (2, 7, 2, 32, 32)
    plain = build_model("hih_cpu", num_landmarks=7, head="none")(images)
    assert plain.decimals is None and plain.offsets is None


def test_bad_variant_and_decimal_size_are_named():
    with pytest.raises(ValueError, match="hih_x"):
        build_model("hih_x")
    with pytest.raises(ValueError, match="decimal_size=3"):
        build_model("hih_t", decimal_size=3)


def _layout_state_dict(variant_stacks: int) -> dict[str, torch.Tensor]:
    """Random tensors under the published names and shapes (HIH_B layout, first N stacks)."""
    if not LAYOUT.exists():
        pytest.skip(f"published layout file not found at {LAYOUT}")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for line in LAYOUT.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        if name.startswith("hg") and int(name[2:].split(".")[0].split("_")[0]) >= variant_stacks:
            continue
        dims = [int(d) for d in shape.strip("[] ").split(",") if d.strip()]
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(dims, generator=gen) + 0.5
        else:
            state[name] = torch.randn(dims, generator=gen) * 0.05
    return state


def test_published_layout_matches_reference_names():
    """The test reference network has exactly the keys of the layout file."""
    state = _layout_state_dict(4)
    assert set(PublishedHIH(4).state_dict()) == set(state)


@pytest.mark.parametrize(("variant", "stacks"), [("hih_t", 1), ("hih_b", 4)])
def test_published_checkpoint_import_reproduces_their_outputs(tmp_path, caplog, variant, stacks):
    state = _layout_state_dict(stacks)
    path = tmp_path / "published.pth"
    torch.save({"state_dict": state, "best_nme": 0.04, "optimizer": {}, "epoch": 59}, path)
    with caplog.at_level(logging.INFO, logger="hih_lightning.models.published"):
        model = load_published_checkpoint(path, variant=variant).eval()
    # Unused skip convs: 6 tensors each (conv weight + 5 BN entries), in every same-width
    # Residual (the stem's res2 and all 256-wide ones).
    skips = sum(1 for k in state if ".skip_layer.conv.weight" in k)
    projecting = 2  # stem res1 (64->128) and res3 (128->256) use theirs
    assert f"dropped {(skips - projecting) * 6} never-used" in caplog.text
    reference = PublishedHIH(stacks).eval()
    reference.load_state_dict(state)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(images)
        heatmaps, decimals = reference(images)
    torch.testing.assert_close(ours.heatmaps, heatmaps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.decimals, decimals, rtol=1e-4, atol=1e-5)


def test_import_names_missing_and_unexpected_keys(tmp_path):
    state = _layout_state_dict(1)
    state.pop("hg0_conv_pred.bias")
    state["hg0_extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatch) as err:
        load_published_checkpoint(path, variant="hih_t")
    message = str(err.value)
    assert "stacks.0.predict.bias" in message and "hg0_extra.weight" in message
    with pytest.raises(CheckpointMismatch, match="shape mismatch"):
        load_published_checkpoint(_save(tmp_path, _layout_state_dict(1)), variant="hih_t",
                                  num_landmarks=68)


def _save(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "ok.pth"
    torch.save({"state_dict": state}, path)
    return path
