"""Network shapes, exact parameter counts and the published-checkpoint import."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hih_lightning import build_model, load_published_checkpoint
from hih_lightning.config import instantiate_node
from hih_lightning.models import parameter_counts
from hih_lightning.models.heads import DownBlock
from hih_lightning.models.hourglass import Hourglass, Residual
from hih_lightning.models.published import CheckpointMismatch, convert_published_state_dict
from published_reference import PublishedHIH


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


# A copy of shared/data/official_release/hih_state_dict_layout.txt (names and shapes only, no
# weights), kept here so the import tests run without the shared data.
LAYOUT = Path(__file__).resolve().parent / "data" / "hih_state_dict_layout.txt"
RTOL, ATOL = 1e-4, 1e-5  # the import test's tolerance


def _layout_shapes(stacks: int) -> dict[str, list[int]]:
    """Published names and shapes (HIH_B layout, first ``stacks`` stacks)."""
    shapes = {}
    for line in LAYOUT.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        if name.startswith("hg") and int(name[2:].split(".")[0].split("_")[0]) >= stacks:
            continue
        shapes[name] = [int(d) for d in shape.strip("[] ").split(",") if d.strip()]
    return shapes


def _layout_state_dict(stacks: int) -> dict[str, torch.Tensor]:
    """Random tensors under the published names and shapes, scaled like trained weights.

    Conv weights ~ N(0, 1/fan_in) and BN scales near 1 keep every activation at order one,
    so the outputs depend on the image and on every layer (with small weights and BN scales
    the network prints one input-independent answer and a wrong forward path goes unseen).
    """
    gen = torch.Generator().manual_seed(0)

    def normal(dims: list[int]) -> torch.Tensor:
        return torch.randn(dims, generator=gen)

    state = {}
    for name, dims in _layout_shapes(stacks).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(dims, generator=gen) + 0.5
        elif name.endswith("bn.weight"):
            state[name] = 1 + 0.1 * normal(dims)
        elif len(dims) == 4:  # conv weight (out, in, kh, kw)
            state[name] = normal(dims) / math.sqrt(dims[1] * dims[2] * dims[3])
        else:  # BN bias and running mean, conv bias
            state[name] = 0.1 * normal(dims)
    return state


def _excess(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Per element |ours - theirs| in units of the import test's tolerance (<= 1: passes)."""
    return (ours - theirs).abs() / (ATOL + RTOL * theirs.abs())


def test_layout_copy_is_the_published_file(shared_data: Path) -> None:
    published = shared_data / "official_release" / "hih_state_dict_layout.txt"
    assert LAYOUT.read_text() == published.read_text()


def test_published_layout_matches_reference_names():
    """The test reference network has exactly the keys of the layout file."""
    state = _layout_state_dict(4)
    assert set(PublishedHIH(4).state_dict()) == set(state)
    # the layout's parameters (buffers aside) add up to the paper's HIH_B count
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(v.numel() for k, v in state.items() if not k.endswith(buffers)) == 22_677_034


def _reference_outputs(state: dict, stacks: int, images: torch.Tensor, **wrong: object
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    reference = PublishedHIH(stacks, **wrong).eval()
    reference.load_state_dict(state)
    with torch.no_grad():
        return reference(images)


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
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    heatmaps, decimals = _reference_outputs(state, stacks, images)
    with torch.no_grad():
        ours = model(images)
    torch.testing.assert_close(ours.heatmaps, heatmaps, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours.decimals, decimals, rtol=RTOL, atol=ATOL)

    # The comparison can see the image: the two images' outputs differ by far more than the
    # tolerance on most outputs (HIH_B's median: ~130x on heatmaps, ~50x on decimals).
    for out in (heatmaps, decimals):
        assert _excess(out[0], out[1]).median() > 20
    # ... and it can see the forward path: each of these wrong networks misses the tolerance
    # by orders of magnitude on most outputs (the head sees only the merged feature).
    wrong_networks = {
        "align_corners=False": {"upsample": {"mode": "bilinear", "align_corners": False}},
        "nearest upsampling": {"upsample": {"mode": "nearest"}},
        "head before the last merge": {"head_reads_merged": False},
    }
    # (bitwise comparisons use a batch of one on both sides: BLAS may sum a batch of two in
    # another order)
    one_heatmaps, _ = _reference_outputs(state, stacks, images[:1])
    for name, wrong in wrong_networks.items():
        bad_heatmaps, bad_decimals = _reference_outputs(state, stacks, images[:1], **wrong)
        assert _excess(bad_decimals, decimals[:1]).median() > 100, name
        if "upsample" in wrong:
            assert _excess(bad_heatmaps, heatmaps[:1]).median() > 100, name
        else:
            assert torch.equal(bad_heatmaps, one_heatmaps), name


# Mapping assumptions that the shapes cannot confirm (every swapped pair has equal shapes);
# the reference network and the import make the same ones:
# - hg{s}.res{l}_1 is the up (skip) branch, res{l}_2 the low branch before the inner level,
#   res{l}_3 the low branch after it; level 4 is the outermost (64 px), res_center innermost;
# - hg{s}_lin1 makes the feature the heatmap is predicted from, hg{s}_conv1 merges it;
# - offset_head.down_ops.{b}.conv1 is the strided 3x3 conv, conv2 the second one, blocks
#   applied in index order.
# Each swap below must change the outputs, so the import test would catch the other choice.
MAPPING_SWAPS = [
    ("hg0.res4_1.", "hg0.res4_2."),
    ("hg0.res4_2.", "hg0.res4_3."),
    ("hg0.res4_1.", "hg0.res4_3."),
    ("hg0.res1_1.", "hg0.res1_2."),
    ("hg0.res1_3.", "hg0.res_center."),
    ("hg0.res4_1.", "hg0.res1_1."),
    ("hg0_lin1.", "hg0_conv1."),
    ("offset_head.down_ops.0.conv1.", "offset_head.down_ops.0.conv2."),
    ("offset_head.down_ops.0.", "offset_head.down_ops.1."),
]


def _imported_outputs(state: dict, variant: str, images: torch.Tensor):
    model = build_model(variant)
    model.load_state_dict(convert_published_state_dict(state, model))
    with torch.no_grad():
        return model.eval()(images)


@pytest.fixture(scope="module")
def hih_t_reference():
    """HIH_T state, a 128 px image (fully convolutional: 4x4 decimal maps), its outputs."""
    state = _layout_state_dict(1)
    images = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    heatmaps, decimals = _reference_outputs(state, 1, images)
    ours = _imported_outputs(state, "hih_t", images)  # the unswapped state matches here too
    torch.testing.assert_close(ours.heatmaps, heatmaps, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours.decimals, decimals, rtol=RTOL, atol=ATOL)
    return state, images, (heatmaps, decimals)


@pytest.mark.parametrize(("first", "second"), MAPPING_SWAPS)
def test_each_mapping_assumption_changes_the_outputs(hih_t_reference, first, second):
    state, images, (heatmaps, decimals) = hih_t_reference
    swapped = dict(state)
    names = [k for k in state if k.startswith(first)]
    assert names and len(names) == sum(1 for k in state if k.startswith(second))
    for name in names:
        other = second + name[len(first):]
        assert state[name].shape == state[other].shape
        swapped[name], swapped[other] = state[other], state[name]
    ours = _imported_outputs(swapped, "hih_t", images)
    # the decimal head's swaps leave the heatmaps alone; every swap moves the decimals
    assert _excess(ours.decimals, decimals).median() > 100
    if first.startswith("hg0"):
        assert _excess(ours.heatmaps, heatmaps).median() > 100


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


def _out_of_place(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The blocks' sums and ReLUs written without reusing buffers: the arithmetic to match."""
    if isinstance(block, Residual):
        identity = x if block.skip is None else block.skip(x)
        return F.relu(block.conv3(block.conv2(block.conv1(x))) + identity)
    if isinstance(block, DownBlock):
        return F.relu(block.conv2(block.conv1(x)) + block.shortcut(x))
    assert isinstance(block, Hourglass)
    low = block.out(block.inner(block.down(F.max_pool2d(x, 2))))
    low = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=True)
    return block.up(x) + low


@pytest.mark.parametrize("block", ["residual", "projection", "down", "hourglass"])
def test_in_place_blocks_equal_the_out_of_place_arithmetic(block):
    """The in-place sums and ReLUs give bit-identical outputs and gradients, and autograd
    accepts them (it raises if a buffer a backward needs was overwritten)."""
    torch.manual_seed(0)
    module, channels = {"residual": (Residual(16, 16), 16), "projection": (Residual(8, 16), 8),
                        "down": (DownBlock(16), 16), "hourglass": (Hourglass(2, 16), 16)}[block]
    x = torch.randn(2, channels, 16, 16)
    grads = []
    for forward in (module, lambda t: _out_of_place(module, t)):
        module.zero_grad()
        inp = x.clone().requires_grad_()
        out = forward(inp)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), inp.grad, [p.grad.clone() for p in module.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = grads
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    assert len(gp_a) > 0 and all(torch.equal(a, b) for a, b in zip(gp_a, gp_b, strict=True))


def test_cpu_model_updates_with_foreach_adam_as_the_per_tensor_loop(compose_cfg):
    """hih_cpu asks Adam for its foreach update (torch's CPU default loops over the tensors
    in Python); the parameters after three steps are bit-identical to that loop's."""
    cfg = compose_cfg("experiment=synthetic_hih", "model.net.input_size=64",
                      "model.net.decimal_size=4")
    gen = torch.Generator().manual_seed(1)
    batch = {"image": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=gen),
             "landmarks": torch.rand(2, 98, 2, generator=gen) * 63}

    def flat(module: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    trained = []
    for foreach in (True, False):
        torch.manual_seed(0)
        module = instantiate_node(cfg, "model")
        initial = flat(module)
        module.log_dict = lambda *args, **kwargs: None  # no trainer attached
        optimizer = module.configure_optimizers()["optimizer"]
        assert [group["foreach"] for group in optimizer.param_groups] == [True]  # the config's
        optimizer.param_groups[0]["foreach"] = foreach
        for _ in range(3):
            optimizer.zero_grad()
            module.training_step(batch, 0).backward()
            optimizer.step()
        trained.append(flat(module))
        assert not torch.equal(trained[-1], initial)
    assert torch.equal(trained[0], trained[1])
