"""hih-quant: quantization NME by hand on generated faces, reproduced independently with plain
numpy on the real 300W public test set, sanity orderings, outputs and clear path errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from hih_lightning.analysis.quantization import (
    Protocol,
    crop_matrices,
    parse_protocol,
    quantization_nme,
    quantize,
    run,
)
from hih_lightning.codecs import ArgmaxCodec, DARKCodec, HIHCodec
from hih_lightning.config import CONFIG_DIR
from hih_lightning.data.benchmarks import DataPathError
from hih_lightning.data.formats import read_center_scale_csv, read_xywh_boxes
from hih_lightning.data.formats.errors import AnnotationError
from hih_lightning.data.records import FaceRecord

W300_PUBLIC = "300w/hrnet_csv/face_landmarks_300w_valid.csv"

# One face whose gt_box crop (factor 1.0) is the identity: the landmark box is
# [-0.5, 255.5]^2, i.e. exactly the 256 px crop, so crop px = image px.
# Rows: two box corners, then the inter-ocular pair C, D.
FACE = np.array([[-0.5, -0.5], [255.5, 255.5], [10.0, 20.0], [101.0, 57.0]])
IDENTITY = Protocol("gt_box", 1.0)


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("quant", overrides=list(overrides))


# ------------------------------------------------------------------ by hand
def test_argmax_floor_by_hand() -> None:
    """stride 4, floor: p = x / 4 -> floor(p) (clipped to [0, 63]) -> 4 floor(p)."""
    # second face: the same face x2 and moved; crop px are unchanged, image errors double
    faces = np.stack([FACE, 2 * FACE + [1000.0, 50.0]])
    matrices = crop_matrices([FaceRecord(None, f) for f in faces], IDENTITY, 256)
    np.testing.assert_allclose(matrices[0], [[1, 0, 0], [0, 1, 0]], atol=1e-12)

    codec = ArgmaxCodec(heatmap_size=64, rounding="floor")
    quantized = quantize(codec, faces, matrices, 256)
    # A: p = -0.125 -> -1, clipped to 0; B: 63.875 -> 63; C: (2.5, 5) -> (2, 5); D -> (25, 14)
    expected = np.array([[0, 0], [252, 252], [8, 20], [100, 56]], dtype=float)
    np.testing.assert_allclose(quantized[0], expected, atol=1e-9)
    np.testing.assert_allclose(quantized[1], 2 * expected + [1000.0, 50.0], atol=1e-9)

    errors = [math.hypot(0.5, 0.5), math.hypot(3.5, 3.5), 2.0, math.hypot(1.0, 1.0)]
    inter_ocular = math.hypot(101 - 10, 57 - 20)
    nme = quantization_nme(codec, faces, matrices, 256, (2, 3))
    np.testing.assert_allclose(nme, [np.mean(errors) / inter_ocular] * 2, rtol=1e-12)


def test_argmax_round_and_hih_by_hand() -> None:
    matrices = crop_matrices([FaceRecord(None, FACE)], IDENTITY, 256)
    rounded = quantize(ArgmaxCodec(heatmap_size=64, rounding="round"), FACE[None], matrices, 256)
    # round half up: C's p = 2.5 -> 3
    np.testing.assert_allclose(rounded[0], [[0, 0], [256 - 4, 256 - 4], [12, 20], [100, 56]])
    # HIH k = 8: i = clip(floor(p)), cell floor(8 f), decoded at the cell centre (c + 0.5) / 8
    hih = quantize(HIHCodec(heatmap_size=64, decimal_size=8), FACE[None], matrices, 256)
    cell = 4 / 16  # half a decimal cell in crop px
    np.testing.assert_allclose(hih[0], [[cell, cell], [255.5 + cell, 255.5 + cell],
                                        [10 + cell, 20 + cell], [101 + cell, 57 + cell]],
                               atol=1e-5)


# ------------------------------------------------------------------ the real 300W test set
def _numpy_argmax_errors(landmarks: np.ndarray, centre: np.ndarray, side: np.ndarray,
                         rounding: str, size: int = 64) -> np.ndarray:
    """Plain numpy: crop = s (x - c + side/2) - 0.5, p = crop / stride, quantize, invert;
    per-face NME (fraction)."""
    stride, s = 256 / size, 256 / side[:, None, None]
    corner = centre[:, None, :] - side[:, None, None] / 2
    p = (s * (landmarks - corner) - 0.5) / stride
    q = np.clip(np.floor(p + 0.5) if rounding == "round" else np.floor(p), 0, size - 1)
    back = (q * stride + 0.5) / s + corner
    error = np.linalg.norm(back - landmarks, axis=-1).mean(axis=1)
    return error / np.linalg.norm(landmarks[:, 36] - landmarks[:, 45], axis=-1)


def _numpy_argmax_nme(landmarks: np.ndarray, centre: np.ndarray, side: np.ndarray,
                      rounding: str, size: int = 64) -> float:
    return float(_numpy_argmax_errors(landmarks, centre, side, rounding, size).mean())


@pytest.fixture(scope="module")
def w300_quant(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """hih-quant through conf/quant.yaml on the 300W public test set, 64x64 only."""
    out = tmp_path_factory.mktemp("quant")
    cfg = _compose(f"shared_data={shared_data}", f"paths.output_dir={out}",
                   "dataset_names=[300w]", "heatmap_sizes=[64]", "progress=false",
                   "decoder_names=[argmax_round,argmax_floor]",
                   "protocols=[gt_box,center_scale,dataset_box]")
    results = run(cfg)
    return {(r.protocol, r.decoder): r for r in results}, out


def test_300w_argmax_matches_plain_numpy(shared_data: Path, w300_quant) -> None:
    results, _ = w300_quant
    # the CSV read with numpy alone: raw .pts values are 1-based
    table = np.loadtxt(shared_data / W300_PUBLIC, delimiter=",", skiprows=1,
                       usecols=range(1, 140))
    assert table.shape == (689, 139)
    landmarks = table[:, 3:].reshape(-1, 68, 2) - 1.0
    lo, hi = landmarks.min(axis=1), landmarks.max(axis=1)
    gt = ((lo + hi) / 2, 1.2 * (hi - lo).max(axis=1))
    center_scale = (table[:, 1:3] - 1.0, table[:, 0] * 200 * 1.25)
    for protocol, (centre, side) in (("gt_box", gt), ("center_scale", center_scale)):
        for rounding in ("round", "floor"):
            expected = 100 * _numpy_argmax_nme(landmarks, centre, side, rounding)
            got = results[(protocol, f"argmax_{rounding}")]
            assert got.faces == 689
            assert round(got.nme, 3) == round(expected, 3), (protocol, rounding)
            assert abs(got.nme - expected) < 1e-9
    # floor errs in [0, 1) px per axis, round in [-0.5, 0.5]: about twice the NME
    for protocol in ("gt_box", "center_scale"):
        ratio = results[(protocol, "argmax_floor")].nme / results[(protocol, "argmax_round")].nme
        assert 1.8 < ratio < 2.2
    # the HRNet CSV has no detector box: dataset_box is skipped, not invented
    assert not any(p == "dataset_box" for p, _ in results)


def test_outputs_written(shared_data: Path, w300_quant) -> None:
    results, out = w300_quant
    data = json.loads((out / "quantization.json").read_text())
    assert data["provenance"]["commit"]
    assert any("dataset_box" in s for s in data["skipped"])
    # the JSON rows are run()'s results, every field
    rows = {(row["protocol"], row["decoder"]): row for row in data["results"]}
    assert len(data["results"]) == 4 and set(rows) == set(results)
    for key, result in results.items():
        assert rows[key] == dataclasses.asdict(result), key
    # subsets: 300W's challenging faces are ibug's 135, the common ones the other 554
    with (shared_data / W300_PUBLIC).open() as f:
        names = [row[0] for row in list(csv.reader(f))[1:]]
    ibug = np.array([name.startswith("ibug/") for name in names])
    assert ibug.sum() == 135
    table = np.loadtxt(shared_data / W300_PUBLIC, delimiter=",", skiprows=1,
                       usecols=range(1, 140))
    landmarks = table[:, 3:].reshape(-1, 68, 2) - 1.0
    lo, hi = landmarks.min(axis=1), landmarks.max(axis=1)
    for rounding in ("round", "floor"):
        errors = 100 * _numpy_argmax_errors(landmarks, (lo + hi) / 2,
                                            1.2 * (hi - lo).max(axis=1), rounding)
        subsets = rows[("gt_box", f"argmax_{rounding}")]["subsets"]
        assert subsets == pytest.approx({"common": errors[~ibug].mean(),
                                         "challenging": errors[ibug].mean()}, abs=1e-9)
    # the markdown table shows the same numbers, rounded as printed
    text = (out / "quantization.md").read_text()
    cells = {}
    for line in text.splitlines():
        parts = [c.strip() for c in line.strip("|").split("|")]
        if len(parts) == 6 and parts[0] == "300w":  # dataset | faces | crop | outside | dec | 64
            cells[(parts[2], parts[4])] = parts
    assert len(cells) == 4
    labels = {"gt_box": "gt_box x1.2", "center_scale": "center_scale x1.25"}
    for (protocol, decoder), row in rows.items():
        printed = cells[(labels[protocol], decoder)]
        assert printed[1] == str(row["faces"]) == "689"
        assert printed[3] == f"{row['outside'] * 100:.2f}"
        assert printed[5] == f"{row['nme']:.3f}"
    # against the paper: argmax (round) rows, the measured NME and its difference to 1.11
    comparison = data["paper_comparison"]
    assert {r["crop"] for r in comparison} == set(labels.values())
    for r in comparison:
        protocol = r["crop"].split()[0]
        assert r["paper"] == 1.11 and r["nme"] == rows[(protocol, "argmax_round")]["nme"]
        assert r["difference"] == pytest.approx(r["nme"] - 1.11, abs=1e-12)
        assert (f"| 300w | 689 | {r['crop']} | {r['nme']:.3f} | 1.11 | "
                f"{r['nme'] - 1.11:+.3f} |") in text
    assert "paper Fig. 4" in text
    assert (out / "quantization.png").stat().st_size > 10_000


def test_orderings_on_real_faces(shared_data: Path) -> None:
    """Finer heatmaps and finer decimal grids quantize less; DARK inverts its own target."""
    records = read_center_scale_csv(shared_data / W300_PUBLIC)[::5]  # 138 faces: fast
    landmarks = np.stack([r.landmarks for r in records])
    matrices = crop_matrices(records, parse_protocol("gt_box"), 256)

    def nme(codec) -> float:
        return float(quantization_nme(codec, landmarks, matrices, 256, (36, 45)).mean())

    argmax = {size: nme(ArgmaxCodec(heatmap_size=size)) for size in (32, 64, 128)}
    assert argmax[128] < argmax[64] < argmax[32]
    for size in (32, 64):  # halving the stride halves the error (uniform fractions)
        assert 1.8 < argmax[size] / argmax[2 * size] < 2.2
    hih = {k: nme(HIHCodec(heatmap_size=64, decimal_size=k)) for k in (4, 8, 16)}
    assert hih[16] < hih[8] < hih[4] < argmax[64]
    assert 0.1 < hih[8] / argmax[64] < 0.15  # max residual 1/16 px vs 1/2 px per axis
    assert nme(DARKCodec(heatmap_size=64)) < hih[16]


# ------------------------------------------------------------------ inputs and errors
def test_parse_protocol() -> None:
    assert parse_protocol("gt_box") == Protocol("gt_box", None)
    assert parse_protocol("center_scale@1").label == "center_scale x1.0"
    assert parse_protocol("dataset_box").label == "dataset_box x1.2"
    for bad in ("box", "gt_box@x", "gt_box@0"):
        with pytest.raises(ValueError):
            parse_protocol(bad)


def test_box_file_reader(tmp_path: Path) -> None:
    path = tmp_path / "boxes.txt"
    path.write_text("11 21 100 50\n1 1 2 3\n")
    np.testing.assert_array_equal(read_xywh_boxes(path), [[10, 20, 110, 70], [0, 0, 2, 3]])
    path.write_text("1 1 0 3\n")
    with pytest.raises(AnnotationError, match="non-positive"):
        read_xywh_boxes(path)


def test_wrong_data_path_names_the_file(tmp_path: Path) -> None:
    cfg = _compose(f"shared_data={tmp_path / 'nowhere'}", f"paths.output_dir={tmp_path}")
    expected = tmp_path / "nowhere" / "wflw" / "WFLW_annotations" / "list_98pt_test"
    with pytest.raises(DataPathError,
                       match=re.escape(f"datasets.wflw.path: expected folder {expected}")):
        run(cfg)


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    """The installed entry point exits 2 with the missing file, no traceback, no run folder."""
    missing = tmp_path / "mine.csv"
    proc = subprocess.run(
        [sys.executable, "-c", "from hih_lightning.analysis.quantization import main; main()",
         f"+datasets.mine={{benchmark:300w,format:center_scale_csv,path:{missing}}}",
         "dataset_names=[mine]", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"hih-quant: error: datasets.mine.path: expected file {missing}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
