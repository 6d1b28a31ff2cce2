"""hih-predict and the Predictor API: folders, box files, videos, real photos, frames."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from hih_lightning.codecs import HIHCodec
from hih_lightning.config import CONFIG_DIR
from hih_lightning.data.datamodules import read_rgb
from hih_lightning.data.formats import read_coco_keypoints
from hih_lightning.data.synthetic import SyntheticFaces
from hih_lightning.losses import LandmarkLoss
from hih_lightning.module import HIHLitModule
from hih_lightning.predict.cli import main, run
from hih_lightning.predict.haar import CascadeNotFoundError, find_cascade
from hih_lightning.predict.inputs import BoxFile, InputError
from hih_lightning.predict.predictor import Predictor


def _has_cascade() -> bool:
    try:
        find_cascade()
    except CascadeNotFoundError:
        return False
    return True


needs_cascade = pytest.mark.skipif(
    not _has_cascade(), reason="no Haar cascade file (OpenCV 5 wheels lack it; `make install` "
    "or `apt-get install opencv-data` provides it)")


def _train_config(run_dir: Path, *overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["debug=tiny", f"paths.output_dir={run_dir}",
                                           f"paths.log_dir={run_dir.parent}", *overrides])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A hih_cpu run folder (128 px) as hih-train leaves it: checkpoint + .hydra/config.yaml.

    Conv weights ~ N(0, 1/fan_in) keep activations at order one, so the landmarks depend on
    the image (the published init's tiny weights would give one answer for every face).
    """
    run_dir = tmp_path_factory.mktemp("run")
    cfg = _train_config(run_dir)
    module = instantiate(cfg.model)
    gen = torch.Generator().manual_seed(0)
    for layer in module.net.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
            layer.weight.data = torch.randn(layer.weight.shape, generator=gen) / math.sqrt(fan_in)
    (run_dir / "checkpoints").mkdir()
    (run_dir / ".hydra").mkdir()
    path = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict()}, path)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return path


def _synthetic_face(seed: int = 5, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    image, landmarks, _ = SyntheticFaces(1, image_size=size, seed=seed).render(0)
    return image, landmarks


def _save(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    return np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def _inside_crop(face: dict, size: int = 128) -> bool:
    """Landmarks lie in the face's crop square (image px), up to half a crop pixel (a decode
    names pixel centres 0..size-1 plus fractions): where the crop can put them."""
    cx, cy, side = face["crop"]
    offset = np.abs(np.asarray(face["landmarks"]) - [cx, cy])
    return bool((offset <= side / 2 + side / (2 * size)).all())


def _predict_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("predict", overrides=[f"output_dir={tmp_path / 'out'}", "progress=false",
                                             f"paths.log_dir={tmp_path / 'logs'}", *overrides])


@needs_cascade
def test_folder_with_a_face_a_non_image_and_an_empty_image(tmp_path, checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, landmarks = _synthetic_face()
    _save(folder / "face.png", image)
    (folder / "notes.txt").write_text("not an image")
    _save(folder / "wall.png", np.full((200, 300, 3), 90, np.uint8))
    result = run(_predict_cfg(tmp_path, f"input={folder}", f"ckpt_path={checkpoint}"))
    by_name = {Path(r["image"]).name: r for r in result["records"]}
    assert [by_name[n]["status"] for n in ("face.png", "notes.txt", "wall.png")] == \
        ["ok", "error", "no_face"]
    assert by_name["notes.txt"]["error"].startswith(f"{folder / 'notes.txt'}: not an image")
    assert result["counts"] == {"ok": 1, "no_face": 1, "error": 0 + 1}
    (face,) = by_name["face.png"]["faces"]
    assert face["box_source"] == "detector"
    assert _iou(np.array(face["box"]), _landmark_box(landmarks)) > 0.5
    assert np.asarray(face["landmarks"]).shape == (98, 2) and len(face["scores"]) == 98
    assert _inside_crop(face)
    saved = json.loads(Path(result["json"]).read_text())
    assert saved["model"]["num_landmarks"] == 98 and saved["model"]["input_size"] == 128
    assert saved["images"] == result["records"]
    rows = Path(result["csv"]).read_text().splitlines()
    assert len(rows) == 4 and len(rows[0].split(",")) == 8 + 3 * 98
    face_row = next(r for r in rows if r.startswith(str(folder / "face.png")))
    assert [float(v) for v in face_row.split(",")[8:10]] == face["landmarks"][0]


@needs_cascade
def test_python_api_equals_cli_output(tmp_path, checkpoint, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, _ = _synthetic_face(seed=5)
    _save(folder / "face.png", image)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut here")
    monkeypatch.setattr(sys, "argv", [
        "hih-predict", f"input={folder}", f"ckpt_path={checkpoint}",
        f"output_dir={tmp_path / 'cli'}", "progress=false", f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'hydra'}"])
    with pytest.raises(SystemExit) as exit_status:
        main()  # the hih-predict entry point
    assert exit_status.value.code == 1  # an unreadable file: reported, then exit status 1
    assert f"{folder / 'broken.jpg'}: truncated JPEG" in capsys.readouterr().err
    records = json.loads((tmp_path / "cli" / "predictions.json").read_text())["images"]
    (cli_face,) = next(r for r in records if r["image"].endswith("face.png"))["faces"]
    (api_face,) = Predictor.from_checkpoint(checkpoint).predict(read_rgb(folder / "face.png"))
    np.testing.assert_allclose(cli_face["landmarks"], api_face.landmarks, atol=6e-4, rtol=0)
    np.testing.assert_allclose(cli_face["scores"], api_face.scores, atol=6e-5, rtol=0)
    np.testing.assert_allclose(cli_face["box"], api_face.box, atol=6e-3, rtol=0)


def test_box_files_json_and_csv(tmp_path, checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, landmarks = _synthetic_face()
    _save(folder / "face.png", image)
    _save(folder / "other.png", image[::-1].copy())
    boxes = [_landmark_box(landmarks).tolist(), [10.0, 20.0, 90.0, 110.0]]
    (tmp_path / "boxes.json").write_text(json.dumps({"face.png": boxes}))
    (tmp_path / "boxes.csv").write_text("image,x1,y1,x2,y2\n" + "".join(
        f"face.png,{','.join(map(str, b))}\n" for b in boxes))
    outputs = []
    for name in ("boxes.json", "boxes.csv"):
        cfg = _predict_cfg(tmp_path / f"run_{name}", f"input={folder}", f"ckpt_path={checkpoint}",
                           f"boxes={tmp_path / name}", "batch_size=1")
        outputs.append({Path(r["image"]).name: r for r in run(cfg)["records"]})
    assert outputs[0] == outputs[1]
    assert outputs[0]["other.png"]["status"] == "no_face"  # not in the box file
    faces = outputs[0]["face.png"]["faces"]
    np.testing.assert_allclose([f["box"] for f in faces], boxes, atol=0.005)
    assert [f["box_source"] for f in faces] == ["file", "file"]
    api = Predictor.from_checkpoint(checkpoint).predict(image, boxes)
    np.testing.assert_allclose([f["landmarks"] for f in faces], [f.landmarks for f in api],
                               atol=6e-4)
    # a 1.2 x box crop: the first box is the landmark box, so the crop side is 1.2 x its side
    side = 1.2 * max(boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
    assert faces[0]["crop"][2] == pytest.approx(side, abs=0.01)
    (tmp_path / "bad.json").write_text(json.dumps({"face.png": [[5, 5, 1, 9]]}))
    with pytest.raises(InputError, match="bad.json.*x2 <= x1"):
        BoxFile(tmp_path / "bad.json")


@needs_cascade
def test_video_frames_with_box_file_and_detector(tmp_path, checkpoint):
    image, landmarks = _synthetic_face()
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for shift in range(0, 30, 5):  # 6 frames, the face moving right by 5 px per frame
        writer.write(cv2.cvtColor(np.roll(image, shift, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp_path / "boxes.json").write_text(json.dumps([{"image": "clip.mp4", "frame": 4,
                                                      "box": [10, 10, 100, 100]}]))
    cfg = _predict_cfg(tmp_path, f"input={video}", f"ckpt_path={checkpoint}",
                       f"boxes={tmp_path / 'boxes.json'}")
    records = run(cfg)["records"]
    assert [(r["frame"], r["status"]) for r in records] == \
        [(0, "no_face"), (1, "no_face"), (2, "no_face"), (3, "no_face"), (4, "ok"),
         (5, "no_face")]
    cfg = _predict_cfg(tmp_path / "detector", f"input={video}", f"ckpt_path={checkpoint}",
                       "video_stride=2", "overlay=true")
    records = run(cfg)["records"]
    assert [r["frame"] for r in records] == [0, 2, 4]
    truth = _landmark_box(landmarks)
    for record in records:
        (face,) = record["faces"]
        moved = truth + [5 * record["frame"], 0, 5 * record["frame"], 0]
        assert _iou(np.array(face["box"]), moved) > 0.5, record["frame"]
    (overlay,) = (tmp_path / "detector" / "out" / "overlays").glob("*.mp4")
    capture = cv2.VideoCapture(str(overlay))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


class _IdealNet(nn.Module):
    """Whatever the image, the codec's ideal output for fixed points (crop px)."""

    def __init__(self, codec: HIHCodec, points: torch.Tensor, stride: float) -> None:
        super().__init__()
        self.codec = codec
        self.register_buffer("points", points / stride)

    def forward(self, images: torch.Tensor):
        return self.codec.ideal_output(self.points.expand(images.shape[0], -1, -1))


def test_landmarks_come_back_in_image_pixels_of_the_right_image():
    codec = HIHCodec(heatmap_size=32, decimal_size=8)
    points = torch.from_numpy(np.random.default_rng(0).uniform(5, 120, (98, 2))).float()
    module = HIHLitModule(_IdealNet(codec, points, 4.0), codec, LandmarkLoss(),
                          optimizer=torch.optim.Adam, dataset="wflw")
    predictor = Predictor(module, device="cpu")
    image = np.zeros((240, 320, 3), np.uint8)
    boxes = np.array([[40.0, 30.0, 140.0, 150.0], [200.0, 100.0, 260.0, 140.0]])
    faces = predictor.predict(image, boxes)
    for face, (x1, y1, x2, y2) in zip(faces, boxes, strict=True):
        side = 1.2 * max(x2 - x1, y2 - y1)  # the crop: 1.2 x the box, square, same centre
        left, top = (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2
        # the crop's 128 pixels tile image [left, left + side]: pixel p's centre lies at
        # left + (p + 0.5) * side / 128 (image pixel centres are integers)
        expected = np.array([left, top]) + (points.numpy() + 0.5) * side / 128
        # the decode is exact to half a decimal cell: 1/16 heatmap px = 0.25 crop px
        error = np.abs(face.landmarks - expected).max()
        assert error <= 0.25 * side / 128 + 1e-9
        assert error > 0  # the cell centres are not the random points themselves
    assert predictor.predict(image, np.zeros((0, 4))) == []


@needs_cascade
def test_real_photos_detector_boxes_overlap_the_annotated_faces(shared_data, checkpoint):
    folder = shared_data / "cofw" / "mmpose_tests_data"
    annotated = read_coco_keypoints(folder / "test_cofw.json", image_root=folder)
    predictor = Predictor.from_checkpoint(checkpoint)
    for record in annotated:
        faces = predictor.predict(read_rgb(record.image_path))
        truth = _landmark_box(record.landmarks)
        best = max(faces, key=lambda f: _iou(f.box, truth))
        assert _iou(best.box, truth) > 0.35, record.image_path
        face_json = best.to_json()
        assert _inside_crop(face_json)
        # the crop (1.2 x the adjusted detector box) holds the annotated face
        cx, cy, side = best.crop
        inside = (np.abs(record.landmarks - [cx, cy]) <= side / 2).all(axis=1)
        assert inside.mean() >= 0.9, (record.image_path, inside.mean())


def test_published_checkpoint_predicts_98_points(tmp_path):
    from test_models import _layout_state_dict

    path = tmp_path / "hih_t.pth"
    torch.save({"state_dict": _layout_state_dict(1)}, path)
    predictor = Predictor.from_published(path, variant="hih_t", device="cpu")
    image, landmarks = _synthetic_face(size=256)
    (face,) = predictor.predict(image, [_landmark_box(landmarks)])
    assert predictor.input_size == 256
    assert face.landmarks.shape == (98, 2) and face.scores.shape == (98,)
    assert _inside_crop(face.to_json(), size=256)


def test_missing_cascade_says_where_it_looked_and_what_to_do():
    with pytest.raises(CascadeNotFoundError, match=r"no_such_cascade.xml not found \(looked in "
                                                   r".*apt-get install opencv-data.*boxes="):
        find_cascade("no_such_cascade.xml")


@needs_cascade
def test_detector_finds_no_face_in_noise_and_one_in_a_face():
    from hih_lightning.predict.haar import FaceDetector

    detector = FaceDetector()
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert detector(noise).shape == (0, 4)
    image, landmarks = _synthetic_face()
    (box,) = detector(image)
    assert _iou(box, _landmark_box(landmarks)) > 0.5


def test_cli_configuration_errors_are_one_line(tmp_path, monkeypatch, capsys):
    image, _ = _synthetic_face()
    _save(tmp_path / "face.png", image)
    for overrides, message in (
            ([f"input={tmp_path / 'face.png'}"],
             "no model: give ckpt_path=<checkpoint of ours> or "
             "published_checkpoint=<the authors' file>"),
            ([f"input={tmp_path / 'nothing'}", f"ckpt_path={tmp_path / 'face.png'}"],
             f"input={tmp_path / 'nothing'}: no such image, video, folder or pattern")):
        monkeypatch.setattr(sys, "argv", ["hih-predict", *overrides, "progress=false",
                                          f"hydra.run.dir={tmp_path / 'job'}"])
        with pytest.raises(SystemExit) as exit_status:
            main()
        assert exit_status.value.code == 2
        assert capsys.readouterr().err.splitlines()[0] == f"hih-predict: error: {message}"
