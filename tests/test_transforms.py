"""Crop protocol + augmentation as one affine: round trips, pixel agreement, protocols, rng."""

from __future__ import annotations

import numpy as np
import pytest

from hih_lightning.data.metainfo import COFW, W300, WFLW
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.transforms import (
    AugmentConfig,
    AugmentParams,
    FaceTransform,
    apply_blur,
    apply_occlusion,
    apply_to_landmarks,
    compose,
    crop_box,
    crop_matrix,
    invert,
    sample_augmentation,
    warp_image,
)

ALWAYS = AugmentConfig(translate_prob=1, flip_prob=1, rotate_prob=1, blur_prob=1,
                       occlusion_prob=1)


def face(rng, n=98, centre=(300.0, 220.0), size=150.0):
    return np.asarray(centre) + rng.uniform(-size / 2, size / 2, size=(n, 2))


# -- crop protocols ---------------------------------------------------------------------------
def test_gt_box_is_centred_and_1_2_times_the_longer_side():
    pts = np.array([[10.0, 20.0], [110.0, 20.0], [60.0, 80.0]])  # w 100, h 60
    cx, cy, side = crop_box(pts, "gt_box")
    assert (cx, cy, side) == pytest.approx((60.0, 50.0, 120.0))
    assert crop_box(pts, "gt_box", factor=1.0)[2] == pytest.approx(100.0)


def test_dataset_box_and_center_scale():
    record = FaceRecord(None, np.zeros((3, 2)), box=np.array([10.0, 20.0, 110.0, 220.0]),
                        center=np.array([145.5, 182.5]), scale=0.745, source="a.txt:7")
    assert crop_box(record, "dataset_box") == pytest.approx((60.0, 120.0, 240.0))
    assert crop_box(record, "center_scale") == pytest.approx((145.5, 182.5, 0.745 * 200 * 1.25))
    assert crop_box(record, "center_scale", factor=1.0)[2] == pytest.approx(149.0)


def test_protocol_errors_name_the_choices_and_the_source():
    record = FaceRecord(None, np.zeros((3, 2)), source="list_98pt_test.txt:42")
    with pytest.raises(ValueError, match="gt_box.*dataset_box.*center_scale"):
        crop_box(record, "detector")
    with pytest.raises(ValueError, match="list_98pt_test.txt:42"):
        crop_box(record, "dataset_box")
    with pytest.raises(ValueError, match="list_98pt_test.txt:42"):
        crop_box(record, "center_scale")
    with pytest.raises(ValueError, match="valid"):
        FaceTransform(protocol="pfld")
    with pytest.raises(ValueError, match="flip_map"):
        FaceTransform(augment=AugmentConfig())


def test_crop_matrix_maps_box_edges_onto_pixel_edges():
    m = crop_matrix(100.0, 50.0, 80.0, 256)
    edges = apply_to_landmarks(m, np.array([[60.0, 10.0], [140.0, 90.0], [100.0, 50.0]]))
    assert edges == pytest.approx(np.array([[-0.5, -0.5], [255.5, 255.5], [127.5, 127.5]]))


def test_whole_image_crop_is_the_identity_warp():
    img = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    m = crop_matrix(31.5, 31.5, 64.0, 64)
    assert m == pytest.approx(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    assert np.array_equal(warp_image(img, m, 64), img)


# -- geometry ---------------------------------------------------------------------------------
def test_crop_augment_inverse_round_trip():
    rng = np.random.default_rng(1)
    transform = FaceTransform("gt_box", 256, ALWAYS, WFLW.flip_map)
    image = np.zeros((480, 640, 3), np.uint8)
    for _ in range(20):
        pts = face(rng)
        out = transform(image, pts, rng)
        assert out["flipped"] and out["image"].shape == (256, 256, 3)
        assert out["landmarks"].dtype == np.float32 and out["matrix"].dtype == np.float64
        crop_pts = out["landmarks"][np.asarray(WFLW.flip_map)]  # undo the renaming
        back = apply_to_landmarks(invert(out["matrix"]), crop_pts)
        assert np.abs(back - pts).max() < 1e-3


def test_flip_twice_is_identity():
    crop = crop_matrix(300.0, 220.0, 180.0, 256)
    flip = compose(crop, AugmentParams(flip=True), 256)
    mirror = np.vstack([flip, [0, 0, 1]]) @ np.linalg.inv(np.vstack([crop, [0, 0, 1]]))
    assert mirror[:2] == pytest.approx(np.array([[-1.0, 0.0, 255.0], [0.0, 1.0, 0.0]]))
    assert (mirror @ mirror) == pytest.approx(np.eye(3))
    idx = np.asarray(W300.flip_map)
    assert np.array_equal(idx[idx], np.arange(68))
    rng = np.random.default_rng(2)
    pts, image = face(rng, 68), np.zeros((480, 640, 3), np.uint8)
    transform = FaceTransform("gt_box", 256, flip_map=W300.flip_map)
    plain = transform(image, pts)["landmarks"]
    flipped = transform(image, pts, params=AugmentParams(flip=True))["landmarks"]
    again = flipped[idx].copy()
    again[:, 0] = 255.0 - again[:, 0]
    assert again == pytest.approx(plain, abs=1e-4)


def _gaussian_dot(shape, x, y, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)).astype(np.float32)


@pytest.mark.parametrize("params", [
    AugmentParams(),
    AugmentParams(translate=(12.3, -7.9), angle=23.0),
    AugmentParams(translate=(-20.0, 5.5), flip=True, angle=-17.0),
])
def test_warped_pixels_follow_the_landmark_transform(params):
    rng = np.random.default_rng(3)
    pts = face(rng, 98)
    dot = pts.mean(axis=0) + [30.37, -20.21]  # off-centre, so rotation moves it
    image = _gaussian_dot((480, 640), *dot, sigma=2.5)
    cx, cy, side = crop_box(pts, "gt_box")
    m = compose(crop_matrix(cx, cy, side, 256), params, 256)
    crop = warp_image(image, m, 256)
    expected = apply_to_landmarks(m, dot)
    yy, xx = np.mgrid[:256, :256]
    window = (np.abs(xx - expected[0]) < 15) & (np.abs(yy - expected[1]) < 15)
    weights = crop * window
    centroid = np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()
    assert np.abs(centroid - expected).max() < 0.02  # measured ~1e-3; a half-pixel slip is 0.5


# -- augmentation sampling --------------------------------------------------------------------
def test_augmentation_is_deterministic_given_the_seed():
    cfg = AugmentConfig()
    a = [sample_augmentation(np.random.default_rng(7), cfg) for _ in range(2)]
    assert a[0] == a[1]
    draws = [sample_augmentation(np.random.default_rng(s), cfg) for s in range(10)]
    assert len({repr(d) for d in draws}) > 1
    transform = FaceTransform("gt_box", 128, cfg, WFLW.flip_map)
    image = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    pts = face(np.random.default_rng(4))
    one = transform(image, pts, np.random.default_rng(11))
    two = transform(image, pts, np.random.default_rng(11))
    assert np.array_equal(one["image"], two["image"])
    assert np.array_equal(one["landmarks"], two["landmarks"])


def test_probabilities_and_magnitudes_respected():
    rng, cfg = np.random.default_rng(8), AugmentConfig()
    draws = [sample_augmentation(rng, cfg, out_size=256) for _ in range(2000)]
    rate = {
        "translate": np.mean([d.translate != (0.0, 0.0) for d in draws]),
        "flip": np.mean([d.flip for d in draws]),
        "rotate": np.mean([d.angle != 0.0 for d in draws]),
        "blur": np.mean([d.blur_radius > 0 for d in draws]),
        "occlusion": np.mean([d.occlusion is not None for d in draws]),
    }
    for key in ("translate", "flip", "rotate", "occlusion"):
        assert 0.45 <= rate[key] <= 0.55, (key, rate[key])
    assert 0.25 <= rate["blur"] <= 0.35
    assert max(max(abs(t) for t in d.translate) for d in draws) <= 30.0
    assert max(abs(d.angle) for d in draws) <= 30.0
    assert max(d.blur_radius for d in draws) <= 5.0
    rects = [d.occlusion for d in draws if d.occlusion is not None]
    assert max(max(r[2], r[3]) for r in rects) <= int(0.4 * 256)
    assert all(r[0] + r[2] <= 256 and r[1] + r[3] <= 256 for r in rects)
    # pixel magnitudes scale with the output size; disabled = identity
    small = [sample_augmentation(np.random.default_rng(9), cfg, 128) for _ in range(200)]
    assert max(max(abs(t) for t in d.translate) for d in small) <= 15.0
    assert sample_augmentation(rng, AugmentConfig.none()) == AugmentParams()


def test_blur_and_occlusion_pixels():
    img = np.zeros((32, 32, 3), np.uint8)
    img[16, 16] = 255
    assert apply_blur(img, 0.0) is img
    blurred = apply_blur(img, 2.0)
    assert blurred[16, 16, 0] < 255 and blurred[16, 18, 0] > 0
    out = apply_occlusion(img, rect=(2, 3, 5, 4), color=(10, 20, 30))
    assert (out[3:7, 2:7] == [10, 20, 30]).all() and out[:3].sum() == 0
    assert img[3, 2].sum() == 0  # the input is untouched
    sampled = apply_occlusion(img, np.random.default_rng(0))
    assert (sampled != img).any()


def test_face_transform_takes_a_record_and_a_hydra_style_config():
    rng = np.random.default_rng(5)
    pts = face(rng, 29)
    visible = np.arange(29) % 3 != 0
    record = FaceRecord(None, pts, box=np.array([200.0, 140.0, 400.0, 300.0]),
                        visible=visible, source="cofw:1")
    transform = FaceTransform("dataset_box", 64, {"flip_prob": 1.0, "rotate_prob": 0},
                              COFW.flip_map)
    out = transform(np.zeros((400, 600), np.uint8), record, rng)
    assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
    assert out["flipped"]
    assert np.array_equal(out["visible"], visible[np.asarray(transform.flip_index)])
    no_box = FaceRecord(None, pts, source="cofw_test.mat:17")
    with pytest.raises(ValueError, match="cofw_test.mat:17"):
        transform(np.zeros((400, 600), np.uint8), no_box, rng)
    with pytest.raises(ValueError, match="unknown augmentation options"):
        FaceTransform(augment={"scale_prob": 0.5}, flip_map=WFLW.flip_map)
