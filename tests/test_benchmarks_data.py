"""Benchmark data modules: official layouts -> fast_dev_run through the real Hydra configs,
exact crop <-> image round trips and codec quantization floors on real benchmark images,
the offline cache, and clear errors for a wrong data path (also from `make`)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hih_lightning import train
from hih_lightning.codecs import ArgmaxCodec, HIHCodec
from hih_lightning.config import CONFIG_DIR, ConfigError
from hih_lightning.data.benchmarks import (
    COFWDataModule,
    DataPathError,
    FileListDataModule,
    W300DataModule,
    WFLWDataModule,
)
from hih_lightning.data.metainfo import get_meta
from hih_lightning.module import HIHLitModule, crop_to_image
from hih_lightning.prepare import main as prepare_main
from hih_lightning.prepare import write_cache

try:  # the MATLAB v7.3 writer lives with the format tests
    from test_formats import _write_v73
except ImportError:  # pragma: no cover - only when tests/ is not on sys.path
    from tests.test_formats import _write_v73

REPO = CONFIG_DIR.parent
WFLW_LISTS = "WFLW_annotations/list_98pt_rect_attr_train_test"
SIZE = 96  # generated images are SIZE x SIZE


# ------------------------------------------------------------------ generated official layouts
def _face(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random landmarks (0-based px) of one face well inside a SIZE x SIZE image."""
    centre = rng.uniform(40, 56, size=2)
    return centre + rng.uniform(-25, 25, size=(n, 2))


def _image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def make_wflw(root: Path, faces: int = 4, seed: int = 0, truth: list | None = None) -> Path:
    """root/WFLW_annotations/.../list_98pt_rect_attr_{train,test}.txt + root/WFLW_images.

    ``truth``, if given, receives (landmarks as written, attribute flags) of each test face."""
    rng = np.random.default_rng(seed)
    (root / WFLW_LISTS).mkdir(parents=True)
    for split in ("train", "test"):
        lines = []
        for i in range(faces):
            name = f"12--Group/12_Group_{split}_{i}.jpg"
            _image(root / "WFLW_images" / name, rng)
            pts = _face(rng, 98)
            rect = np.r_[pts.min(0) - 2, pts.max(0) + 2]
            attrs = [int(i % 2 == 0)] * 6 if split == "test" else [0] * 6
            attrs[i % 6] = 1
            fields = [f"{v:.6f}" for v in pts.ravel()] + [f"{v:.0f}" for v in rect]
            if split == "test" and truth is not None:
                truth.append((np.array(fields[:196], float).reshape(98, 2), attrs))
            lines.append(" ".join(fields + [str(a) for a in attrs] + [name]))
        (root / WFLW_LISTS / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(lines))
    return root


W300_FOLDERS = ("afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug")


def make_300w(root: Path, seed: int = 0, truth: list | None = None) -> Path:
    """iBUG folders, two faces each, ``.pts`` (1-based) beside a PNG.

    ``truth``, if given, receives (folder, 0-based landmarks as written) of every face."""
    rng = np.random.default_rng(seed)
    for folder in W300_FOLDERS:
        for i in range(2):
            stem = root / folder / f"face_{i}"
            _image(stem.with_suffix(".png"), rng)
            pts = np.round(_face(rng, 68) + 1, 3)
            if truth is not None:
                truth.append((folder, pts - 1))
            body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
            stem.with_suffix(".pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    return root


def make_cofw(root: Path, faces: int = 4, seed: int = 0, truth: list | None = None) -> Path:
    """Official-style v7.3 COFW_{train,test}_color.mat, images inside.

    ``truth``, if given, receives the 0-based landmarks of each test face."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, keys in (("COFW_train_color.mat", ("IsTr", "bboxesTr", "phisTr")),
                       ("COFW_test_color.mat", ("IsT", "bboxesT", "phisT"))):
        images = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(faces)]
        pts = [_face(rng, 29) + 1 for _ in range(faces)]  # 1-based in the .mat
        if name.startswith("COFW_test") and truth is not None:
            truth.extend(p - 1 for p in pts)
        phis = np.stack([np.r_[p[:, 0], p[:, 1], rng.integers(0, 2, 29)] for p in pts])
        boxes = np.stack([np.r_[p.min(0) - 2, p.max(0) - p.min(0) + 4] for p in pts])
        _write_v73(root / name, images, phis.astype(float), boxes, keys=keys)
    return root


def make_coco(root: Path, faces: int = 3, seed: int = 0, truth: list | None = None) -> Path:
    """A COCO keypoint JSON (mmpose style, 0-based, v=2) with 98-point faces.

    ``truth``, if given, receives the landmarks of each face."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(faces):
        _image(root / f"img{i}.jpg", rng)
        pts = _face(rng, 98)
        if truth is not None:
            truth.append(pts)
        images.append({"id": i, "file_name": f"img{i}.jpg"})
        kp = np.c_[pts, np.full(98, 2.0)].ravel().tolist()
        lo, hi = pts.min(0), pts.max(0)
        anns.append({"id": i, "image_id": i, "keypoints": kp,
                     "bbox": [*lo.tolist(), *(hi - lo).tolist()]})
    path = root / "faces.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


# ------------------------------------------------------------------ Hydra
def compose_train(tmp_path: Path, *overrides: str) -> DictConfig:
    """The real train.yaml, CPU-size model, one batch of each loop, nothing logged."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[
            "model=hih_cpu", "debug=fast_dev_run", "logger=none", "callbacks=none",
            "trainer=cpu", f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.output_dir={tmp_path / 'out'}", "data.batch_size=2",
            "data.eval_batch_size=16", "data.num_workers=0", "data.pin_memory=false",
            *overrides])


def _fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str
                  ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """train.run on the real configs; returns its metrics and what the test loop saw: the
    predictions and ground truth of every test face in original-image px, (F, N, 2)."""
    seen: dict[str, list] = {"preds": [], "truth": []}
    test_step = HIHLitModule.test_step

    def recording_test_step(module, batch, batch_idx):
        seen["preds"].append(module.predict_step(batch, batch_idx).detach().cpu())
        seen["truth"].append(batch["landmarks_image"].cpu())
        return test_step(module, batch, batch_idx)

    monkeypatch.setattr(HIHLitModule, "test_step", recording_test_step)
    metrics = train.run(compose_train(tmp_path, *overrides))
    assert (tmp_path / "out" / "metrics.md").is_file()
    return (metrics, torch.cat(seen["preds"]).double().numpy(),
            torch.cat(seen["truth"]).double().numpy())


def _nme(preds: np.ndarray, truth: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Per-face NME by hand: mean point error / distance of the pair's two true points."""
    error = np.linalg.norm(preds - truth, axis=-1).mean(axis=1)
    return error / np.linalg.norm(truth[:, pair[0]] - truth[:, pair[1]], axis=-1)


def _match(truth: np.ndarray, written: list[np.ndarray], atol: float) -> list[int]:
    """Index into ``written`` of each face the test loop saw (each written face once)."""
    order = [int(np.argmin([np.abs(t - w).max() for w in written])) for t in truth]
    for t, i in zip(truth, order, strict=True):
        np.testing.assert_allclose(t, written[i], rtol=0, atol=atol)
    assert sorted(order) == list(range(len(written)))
    return order


def test_wflw_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list = []
    root = make_wflw(tmp_path / "WFLW", truth=written)
    metrics, preds, truth = _fast_dev_run(tmp_path, monkeypatch, "data=wflw",
                                          f"paths.data_dir={tmp_path}")
    assert len(truth) == 4  # every test face, once
    order = _match(truth, [pts for pts, _ in written], atol=1e-6)
    nme = _nme(preds, truth, (60, 72))
    assert metrics["test/nme"] == pytest.approx(nme.mean(), rel=1e-6)
    # the 6 attribute subsets come out of the same run, each over the faces flagged for it
    flags = np.array([written[i][1] for i in order])
    for k, subset in enumerate(get_meta("wflw").subsets):
        assert metrics[f"test/{subset}/nme"] == pytest.approx(nme[flags[:, k] == 1].mean(),
                                                              rel=1e-6), subset
    dm = WFLWDataModule(root=root, image_size=128)
    dm.setup("test")
    rec = dm.datasets["test"].source.record(0)
    assert rec.box is not None and rec.attributes.tolist() == [1, 1, 1, 1, 1, 1]


def test_300w_fast_dev_run_reports_common_and_challenging(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    written: list = []
    make_300w(tmp_path / "300W", truth=written)
    metrics, preds, truth = _fast_dev_run(tmp_path, monkeypatch, "data=300w",
                                          f"paths.data_dir={tmp_path}")
    # the full test set: helen/testset + lfpw/testset (common) + ibug (challenging)
    test_faces = [(folder, pts) for folder, pts in written
                  if folder in ("helen/testset", "lfpw/testset", "ibug")]
    assert len(truth) == 6
    order = _match(truth, [pts for _, pts in test_faces], atol=1e-9)
    folders = np.array([test_faces[i][0] for i in order])
    nme = _nme(preds, truth, (36, 45))
    assert metrics["test/nme"] == pytest.approx(nme.mean(), rel=1e-6)
    assert metrics["test/common/nme"] == pytest.approx(nme[folders != "ibug"].mean(), rel=1e-6)
    assert metrics["test/challenging/nme"] == pytest.approx(nme[folders == "ibug"].mean(),
                                                            rel=1e-6)
    dm = W300DataModule(root=tmp_path / "300W", test_split="challenging", image_size=128)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 2  # ibug only


def test_cofw_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list = []
    make_cofw(tmp_path / "COFW", truth=written)
    metrics, preds, truth = _fast_dev_run(tmp_path, monkeypatch, "data=cofw",
                                          f"paths.data_dir={tmp_path}",
                                          "data.crop_protocol=dataset_box")
    assert len(truth) == 4
    _match(truth, written, atol=1e-9)
    # every point counts, occluded ones too; inter-ocular (8, 9) and inter-pupil (16, 17)
    assert metrics["test/nme"] == pytest.approx(_nme(preds, truth, (8, 9)).mean(), rel=1e-6)
    assert metrics["test/nme_ip"] == pytest.approx(_nme(preds, truth, (16, 17)).mean(),
                                                   rel=1e-6)
    dm = COFWDataModule(root=tmp_path / "COFW", image_size=128)
    dm.setup("fit")
    assert dm.datasets["train"].source.images is not None  # in memory, from the .mat


def test_filelist_coco_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list = []
    path = make_coco(tmp_path / "coco", truth=written)
    metrics, preds, truth = _fast_dev_run(tmp_path, monkeypatch, "data=filelist",
                                          f"data.train={path}", f"data.test={path}")
    assert len(truth) == 3
    _match(truth, written, atol=1e-9)
    assert metrics["test/nme"] == pytest.approx(_nme(preds, truth, (60, 72)).mean(), rel=1e-6)


def test_cache_prepare_then_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hih-prepare writes the cache from the same overrides; training reads only the cache."""
    written: list = []
    make_wflw(tmp_path / "WFLW", truth=written)
    cache = tmp_path / "cache"
    common = ["data=wflw", f"paths.data_dir={tmp_path}", "model=hih_cpu"]
    prepare_main([*common, f"data.cache_dir={cache}", "data.num_workers=0"])
    info = json.loads((cache / "cache.json").read_text())
    assert info["splits"] == {"train": 4, "test": 4} and info["aliases"] == {"val": "test"}
    # the originals are gone: the run below can only have read the cache
    shutil.rmtree(tmp_path / "WFLW")
    metrics, preds, truth = _fast_dev_run(tmp_path, monkeypatch, *common,
                                          f"data.cache_dir={cache}")
    assert len(truth) == 4
    _match(truth, [pts for pts, _ in written], atol=1e-6)
    assert metrics["test/nme"] == pytest.approx(_nme(preds, truth, (60, 72)).mean(), rel=1e-6)
    # a cache made for other settings is refused, naming the mismatch
    with pytest.raises(ConfigError, match="image_size"):
        train.run(compose_train(tmp_path, *common, f"data.cache_dir={cache}",
                                "model.net.input_size=64"))


# ------------------------------------------------------------------ real benchmark images
REAL = {  # dataset: (folder, json, one_based)
    "wflw": ("wflw/mmpose_tests_data", "test_wflw.json", False),
    "300w": ("300w/mmpose_tests_data", "test_300w.json", True),
    "cofw": ("cofw/mmpose_tests_data", "test_cofw.json", False),
}


def _real_module(shared: Path, dataset: str, **kw: object) -> FileListDataModule:
    folder, name, one_based = REAL[dataset]
    dm = FileListDataModule(dataset=dataset, test=str(shared / folder / name), fmt="coco",
                            reader_kwargs={"one_based": one_based}, image_size=256,
                            num_workers=0, **kw)
    dm.setup("test")
    return dm


def _samples(dm: FileListDataModule) -> list[dict]:
    dataset = dm.datasets["test"]
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("dataset", sorted(REAL))
def test_eval_crop_inverse_on_real_images(shared_data: Path, tmp_path: Path,
                                          dataset: str) -> None:
    dm = _real_module(shared_data, dataset)
    samples = _samples(dm)
    assert len(samples) >= 2
    for s in samples:
        back = crop_to_image(s["landmarks"][None], s["matrix"][None])[0]
        assert (back - s["landmarks_image"]).abs().max() < 1e-3
    # the cache gives the same ground truth, matrices and (up to OpenCV's 1/32 px fixed-point
    # resampling) the same eval crops, and still maps back to the original image
    write_cache(dm, tmp_path / "cache", splits=("test",))
    cached = _real_module(shared_data, dataset, cache_dir=tmp_path / "cache")
    for s, c in zip(samples, _samples(cached), strict=True):
        torch.testing.assert_close(c["landmarks_image"], s["landmarks_image"], rtol=0, atol=0)
        torch.testing.assert_close(c["matrix"], s["matrix"], rtol=0, atol=1e-9)
        back = crop_to_image(c["landmarks"][None], c["matrix"][None])[0]
        assert (back - s["landmarks_image"]).abs().max() < 1e-3
        diff = (c["image"].int() - s["image"].int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01


@pytest.mark.parametrize("dataset", sorted(REAL))
def test_codec_quantization_floor_on_real_images(shared_data: Path, dataset: str) -> None:
    """encode -> ideal output -> decode, mapped back to original-image px, is within the
    representation's floor: HIH 1/(2k) heatmap px per axis, argmax 0.5 px per axis."""
    stride, k = 4.0, 8
    codecs = {"hih": (HIHCodec(heatmap_size=64, decimal_size=k), 1 / (2 * k)),
              "argmax": (ArgmaxCodec(heatmap_size=64), 0.5)}
    samples = _samples(_real_module(shared_data, dataset))
    crop = torch.stack([s["landmarks"] for s in samples]).double()
    matrix = torch.stack([s["matrix"] for s in samples])
    truth = torch.stack([s["landmarks_image"] for s in samples])
    scale = 1.0 / torch.linalg.det(matrix[:, :, :2]).sqrt()  # image px per crop px
    for name, (codec, per_axis) in codecs.items():
        decoded = codec.decode(codec.ideal_output(crop / stride)).landmarks.double() * stride
        error = (crop_to_image(decoded, matrix) - truth).norm(dim=-1)  # (B, N) image px
        bound = per_axis * stride * scale[:, None] * math.sqrt(2)
        assert (error <= bound * (1 + 1e-6) + 1e-4).all(), (name, (error / bound).max())
        assert error.mean() > 0.1 * bound.mean()  # sub-pixel truth really is quantized


# ------------------------------------------------------------------ wrong paths fail fast
@pytest.mark.parametrize("module,kwargs,expected", [
    (WFLWDataModule, {}, f"{WFLW_LISTS}/list_98pt_rect_attr_train.txt"),
    (W300DataModule, {}, "afw"),
    (W300DataModule, {"layout": "csv"}, "face_landmarks_300w_train.csv"),
    (COFWDataModule, {}, "COFW_train_color.mat"),
])
def test_missing_root_names_expected_file(tmp_path: Path, module: type, kwargs: dict,
                                          expected: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataPathError) as err:
        module(root=root, **kwargs)
    assert str(root / expected) in str(err.value) and "DATA_DIR" in str(err.value)


def test_missing_images_and_config_path(tmp_path: Path) -> None:
    root = make_wflw(tmp_path / "WFLW")
    first = sorted((root / "WFLW_images").rglob("*.jpg"))
    for path in first:
        path.unlink()
    dm = WFLWDataModule(root=root)
    with pytest.raises(DataPathError, match="expected image"):
        dm.setup("test")
    # through hih-train's config: data.root is wrong -> the data error itself names the file
    with pytest.raises(DataPathError, match=str(tmp_path / "none" / "WFLW" / WFLW_LISTS)):
        train.run(compose_train(tmp_path, "data=wflw", f"paths.data_dir={tmp_path / 'none'}"))


def test_make_reproduce_fails_fast_without_data() -> None:
    start = time.perf_counter()
    proc = subprocess.run(["make", "reproduce-wflw", "DATA_DIR=/nonexistent"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    expected = f"/nonexistent/WFLW/{WFLW_LISTS}/list_98pt_rect_attr_train.txt"
    assert expected in proc.stdout + proc.stderr
    assert elapsed < 30


# ------------------------------------------------------------------ the published recipes
@pytest.mark.parametrize("benchmark", ["wflw", "300w", "cofw"])
@pytest.mark.parametrize("variant", ["t", "s", "b"])
def test_experiment_recipes(benchmark: str, variant: str) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={benchmark}_hih_{variant}"])
    assert cfg.experiment_name == f"{benchmark}_hih_{variant}"
    assert cfg.data._target_.endswith(
        {"wflw": "WFLWDataModule", "300w": "W300DataModule", "cofw": "COFWDataModule"}[benchmark])
    assert cfg.model.net.variant == f"hih_{variant}" and cfg.model.net.input_size == 256
    assert cfg.data.batch_size == 16 and cfg.data.crop_protocol == "gt_box"
    assert cfg.trainer.max_epochs == 60 and cfg.trainer.strategy == "ddp"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.channels_last
    assert list(cfg.model.scheduler.milestones) == [30, 50] and cfg.model.scheduler.gamma == 0.1
    assert cfg.model.optimizer.lr == 1e-4 and cfg.model.optimizer.weight_decay == 0.0
    assert not cfg.model.flip_test
