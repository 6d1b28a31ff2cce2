"""Crop protocol + augmentation as one affine: round trips, pixel agreement, protocols, rng;
the photometric list (albumentations on the crop): seeding, the published blur and occlusion,
refusals."""

from __future__ import annotations

import random

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from hih_lightning.config import ConfigError, instantiate_node, validate_config
from hih_lightning.data.datamodules import FaceDataset, RecordSource
from hih_lightning.data.metainfo import COFW, W300, WFLW, get_meta
from hih_lightning.data.photometric import (
    Photometric,
    RandomOcclusion,
    ScaledGaussianBlur,
    published_photometric,
)
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.synthetic import SyntheticFaces
from hih_lightning.data.transforms import (
    AugmentConfig,
    AugmentParams,
    FaceTransform,
    apply_to_landmarks,
    compose,
    crop_box,
    crop_matrix,
    invert,
    sample_augmentation,
    warp_image,
)

ALWAYS = AugmentConfig(translate_prob=1, flip_prob=1, rotate_prob=1)


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
    }
    for key in ("translate", "flip", "rotate"):
        assert 0.45 <= rate[key] <= 0.55, (key, rate[key])
    assert max(max(abs(t) for t in d.translate) for d in draws) <= 30.0
    assert max(abs(d.angle) for d in draws) <= 30.0
    # pixel magnitudes scale with the output size; disabled = identity
    small = [sample_augmentation(np.random.default_rng(9), cfg, 128) for _ in range(200)]
    assert max(max(abs(t) for t in d.translate) for d in small) <= 15.0
    assert sample_augmentation(rng, AugmentConfig.none()) == AugmentParams()


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
        FaceTransform(augment={"scale_jitter": 0.5}, flip_map=WFLW.flip_map)


# -- zoom (scale_prob / scale_delta; not in the published recipe) ------------------------------
def _published_draw(rng, cfg, out_size=256):
    """sample_augmentation as it was before the zoom: translate, flip, rotate, nothing else."""
    px = out_size / cfg.reference_size
    translate = (0.0, 0.0)
    if rng.random() < cfg.translate_prob:
        tx, ty = rng.uniform(-cfg.translate_px, cfg.translate_px, size=2) * px
        translate = (float(tx), float(ty))
    flip = bool(rng.random() < cfg.flip_prob)
    angle = 0.0
    if rng.random() < cfg.rotate_prob:
        angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    return AugmentParams(translate, flip, angle)


@pytest.mark.parametrize("params", [
    AugmentParams(),
    AugmentParams(translate=(12.3, -7.9), angle=23.0),
    AugmentParams(translate=(-20.0, 5.5), flip=True, angle=-17.0),
])
@pytest.mark.parametrize("scale", [1.1, 0.87])
def test_zoom_is_about_the_crop_centre_and_applied_last(params, scale):
    rng = np.random.default_rng(12)
    pts = face(rng, 98)
    crop = crop_matrix(*crop_box(pts, "gt_box"), 256)
    plain = apply_to_landmarks(compose(crop, params, 256), pts)
    zoomed_params = AugmentParams(params.translate, params.flip, params.angle, scale)
    zoomed = apply_to_landmarks(compose(crop, zoomed_params, 256), pts)
    c = np.array([127.5, 127.5])
    np.testing.assert_allclose(zoomed, c + scale * (plain - c), rtol=0, atol=1e-9)
    # the centre stays put; a point at distance d goes to scale * d along the same ray
    only = compose(np.eye(2, 3), AugmentParams(scale=scale), 256)
    np.testing.assert_allclose(apply_to_landmarks(only, c), c, rtol=0, atol=1e-12)
    for d, direction in ((10.0, (1.0, 0.0)), (37.5, (0.6, -0.8))):
        moved = apply_to_landmarks(only, c + d * np.array(direction)) - c
        assert np.linalg.norm(moved) == pytest.approx(scale * d, rel=1e-12)
        np.testing.assert_allclose(moved / np.linalg.norm(moved), direction, atol=1e-12)
    # and the round trip back to image px still holds
    back = apply_to_landmarks(invert(compose(crop, zoomed_params, 256)), zoomed)
    np.testing.assert_allclose(back, pts, rtol=0, atol=1e-9)


def test_zoom_off_draws_exactly_as_the_published_recipe():
    for cfg in (AugmentConfig(), AugmentConfig(scale_prob=0.0, scale_delta=0.3),
                AugmentConfig(translate_prob=1, flip_prob=1, rotate_prob=1, scale_delta=0.2)):
        for seed in range(50):
            new, old = np.random.default_rng(seed), np.random.default_rng(seed)
            params = sample_augmentation(new, cfg, 128)
            assert params == _published_draw(old, cfg, 128) and params.scale == 1.0
            # nothing more was drawn: the rng is where the published recipe leaves it
            assert new.bit_generator.state == old.bit_generator.state
            assert new.random() == old.random()


def test_zoom_on_draws_last_within_its_range():
    cfg = AugmentConfig(scale_prob=1.0, scale_delta=0.1)
    scales = []
    for seed in range(500):
        new, old = np.random.default_rng(seed), np.random.default_rng(seed)
        params = sample_augmentation(new, cfg)
        published = _published_draw(old, cfg)
        # drawn last: translate, flip and angle are the published draws of the same seed
        assert (params.translate, params.flip, params.angle) == \
            (published.translate, published.flip, published.angle)
        # then one coin (p = scale_prob) and the zoom itself, nothing else
        assert old.random() < 1.0 and params.scale == old.uniform(0.9, 1.1)
        assert new.bit_generator.state == old.bit_generator.state
        scales.append(params.scale)
    assert min(scales) >= 0.9 and max(scales) <= 1.1
    assert min(scales) < 0.91 and max(scales) > 1.09 and abs(np.mean(scales) - 1.0) < 0.01
    half = [sample_augmentation(np.random.default_rng(s), AugmentConfig(scale_prob=0.5,
                                                                        scale_delta=0.1))
            for s in range(2000)]
    assert 0.45 <= np.mean([d.scale != 1.0 for d in half]) <= 0.55
    for delta in (1.0, -0.1):
        with pytest.raises(ValueError, match="scale_delta"):
            AugmentConfig(scale_delta=delta)


@pytest.mark.parametrize("scale", [1.1, 0.9])
def test_zoomed_face_transform_moves_pixels_with_landmarks(scale):
    rng = np.random.default_rng(21)
    pts = face(rng, 68)
    k = 36  # an eye corner, off the crop centre
    image = (255 * _gaussian_dot((480, 640), *pts[k], sigma=3.0)).round().astype(np.uint8)
    image = np.repeat(image[:, :, None], 3, axis=2)
    transform = FaceTransform("gt_box", 128, {"scale_prob": 1.0, "scale_delta": 0.1,
                                              "flip_prob": 0, "photometric": []},
                              W300.flip_map)
    plain = transform(image, pts, params=AugmentParams())
    out = transform(image, pts, params=AugmentParams(scale=scale))
    c = np.array([63.5, 63.5])
    np.testing.assert_allclose(out["landmarks"], c + scale * (plain["landmarks"] - c),
                               rtol=0, atol=1e-4)
    expected = out["landmarks"][k].astype(np.float64)
    crop = out["image"][:, :, 0].astype(np.float64)
    yy, xx = np.mgrid[:128, :128]
    window = (np.abs(xx - expected[0]) < 10) & (np.abs(yy - expected[1]) < 10)
    weights = crop * window
    centroid = np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()
    assert np.abs(centroid - expected).max() < 0.05
    # the dot's spread scales too: its second moment grows by scale^2
    def spread(img, at):
        w = img * ((np.abs(xx - at[0]) < 10) & (np.abs(yy - at[1]) < 10))
        return (w * ((xx - at[0]) ** 2 + (yy - at[1]) ** 2)).sum() / w.sum()
    ratio = spread(crop, expected) / spread(plain["image"][:, :, 0].astype(np.float64),
                                            plain["landmarks"][k].astype(np.float64))
    assert ratio == pytest.approx(scale**2, rel=0.05)
    # drawn from the rng, the zoom is what sample_augmentation says for that seed
    drawn = transform(image, pts, np.random.default_rng(5))
    params = sample_augmentation(np.random.default_rng(5), transform.augment, 128)
    assert 0.9 <= params.scale <= 1.1 and params.scale != 1.0
    np.testing.assert_allclose(drawn["matrix"],
                               compose(crop_matrix(*crop_box(pts, "gt_box"), 128), params, 128))


# -- the photometric list -----------------------------------------------------------------------
def _photometric_list(compose_cfg, *overrides):
    cfg = compose_cfg(*overrides)
    return [instantiate(node) for node in cfg.data.augment.photometric]


def _draw(transform, image, seed):
    """One call of one transform, its random state set from ``seed``; (image, params)."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform(image=image)["image"], dict(transform.params)


def _reference_blur(image, sigma):
    """Gaussian blur of standard deviation ``sigma``, computed directly: separable sampled
    Gaussian to 4 sigma, mirrored border (edge pixel not repeated), no rounding."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    h, w = image.shape[:2]
    pad = ((radius, radius), (radius, radius), (0, 0))
    padded = np.pad(image.astype(np.float64), pad, mode="reflect")
    rows = sum(k * padded[i:i + h] for i, k in enumerate(kernel))
    return sum(k * rows[:, i:i + w] for i, k in enumerate(kernel))


def test_published_blur_is_a_gaussian_of_the_recipe_radius(compose_cfg):
    (blur,) = [t for t in _photometric_list(compose_cfg) if isinstance(t, ScaledGaussianBlur)]
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    small = noise[:64, :64].copy()  # a 64 px crop: sigma = radius x 64 / 256
    radii = []
    for seed in range(2000):
        out, params = _draw(blur, small, seed)
        if not params:
            assert np.array_equal(out, small)
            continue
        radii.append(params["sigma"] * 4)
        # rounding (0.5) + the kernel cut at int(3.5 sigma) (<= 0.5% of its mass) < 1.5 levels
        assert np.abs(out - _reference_blur(small, params["sigma"])).max() < 1.5, seed
    assert 0.27 <= len(radii) / 2000 <= 0.33  # p = 0.3
    radii = np.sort(radii)
    uniform = np.arange(1, len(radii) + 1) / len(radii)
    assert np.abs(radii / 5.0 - uniform).max() < 0.06  # KS distance to U(0, 5)
    assert radii[0] < 0.05 and 4.95 < radii[-1] <= 5.0
    # at the published 256 px: the same draws give the full radius, and the pixels of
    # albumentations' own GaussianBlur with sigma U(0, 5)
    plain = A.GaussianBlur(sigma_limit=(0.0, 5.0), p=0.3)
    big = 0
    for seed in range(40):
        out, params = _draw(blur, noise, seed)
        assert np.array_equal(out, _draw(plain, noise, seed)[0])
        if params:
            assert params["sigma"] == pytest.approx(4 * _draw(blur, small, seed)[1]["sigma"])
            assert np.abs(out - _reference_blur(noise, params["sigma"])).max() < 1.5
            big += params["sigma"] > 2.5
    assert big > 0  # large radii were checked at full size too


def test_published_occlusion_rectangles_match_the_recipe(compose_cfg):
    (occlusion,) = [t for t in _photometric_list(compose_cfg) if isinstance(t, RandomOcclusion)]
    for size, draws in ((256, 2000), (100, 300)):
        background = np.full((size, size, 3), 7, np.uint8)
        rects, fills = [], []
        for seed in range(draws):
            out, params = _draw(occlusion, background, seed)
            changed = (out != background).any(axis=2)
            assert changed.any() == bool(params), seed
            if not params:
                continue
            ys, xs = np.nonzero(changed)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            assert changed[y0:y1, x0:x1].all()  # one solid rectangle, nothing else touched
            patch = out[y0:y1, x0:x1].reshape(-1, 3)
            assert (patch == patch[0]).all()  # in one colour
            rects.append((x0, y0, x1 - x0, y1 - y0))
            fills.append(patch[0])
        rects, fills = np.array(rects), np.array(fills, dtype=np.float64)
        assert 0.46 <= len(rects) / draws <= 0.54  # p = 0.5
        side = int(0.4 * size)  # each side uniform in 1..int(0.4 x crop side)
        sizes = rects[:, 2:]
        assert sizes.min() == 1 and sizes.max() == side
        if size == 256:
            assert np.abs(sizes.mean(axis=0) - (1 + side) / 2).max() < 3.0
            assert abs(np.corrcoef(sizes.T)[0, 1]) < 0.1  # width and height drawn apart
            # position uniform with the rectangle inside; colour uniform over 0..255
            free = size - sizes
            assert np.abs((rects[:, :2] / free).mean(axis=0) - 0.5).max() < 0.03
            assert np.abs(fills.mean(axis=0) - 127.5).max() < 7.0
            assert fills.min() < 5 and fills.max() > 250
        assert (rects[:, :2] + sizes <= size).all()


def test_blur_and_occlusion_are_drawn_independently(compose_cfg):
    photometric = Photometric(_photometric_list(compose_cfg))
    blur, occlusion = photometric.compose.transforms
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    applied = []
    for index in range(1500):
        photometric(image, np.random.default_rng([0, 0, index]))
        applied.append((bool(blur.params), bool(occlusion.params)))
    rates = np.mean(applied, axis=0)
    both = np.mean([b and o for b, o in applied])
    assert 0.26 <= rates[0] <= 0.34 and 0.46 <= rates[1] <= 0.54
    assert abs(both - 0.15) < 0.03  # one shared stream, not one equal seed per transform


def _synthetic_train(compose_cfg, *overrides):
    datamodule = instantiate_node(compose_cfg("data.image_size=64", *overrides), "data")
    datamodule.setup("fit")
    return datamodule


def test_same_seed_epoch_and_index_give_the_same_crop(compose_cfg):
    train = _synthetic_train(compose_cfg, "data/augment=strong").datasets["train"]
    n = len(train)
    for key in (3, 3 + 2 * n):  # index 3 at epochs 0 and 2
        one, two = train[key], train[key]
        assert torch.equal(one["image"], two["image"])
        assert torch.equal(one["landmarks"], two["landmarks"])
    assert not torch.equal(train[3]["image"], train[3 + n]["image"])  # another epoch
    again = _synthetic_train(compose_cfg, "data/augment=strong").datasets["train"]
    assert torch.equal(again[3 + n]["image"], train[3 + n]["image"])  # a fresh process state
    reseeded = _synthetic_train(compose_cfg, "data/augment=strong", "seed=7").datasets["train"]
    assert not torch.equal(reseeded[3]["image"], train[3]["image"])


def test_worker_count_does_not_change_the_crops(compose_cfg):
    datamodule = _synthetic_train(compose_cfg, "data/augment=strong")

    def epoch(workers):
        datamodule.num_workers = workers
        batches = list(datamodule.train_dataloader())
        return torch.cat([b["image"] for b in batches]), torch.cat([b["index"] for b in batches])

    (serial, order), (parallel, order2) = epoch(0), epoch(2)
    assert torch.equal(order, order2) and torch.equal(serial, parallel)
    plain = _synthetic_train(compose_cfg, "data/augment=strong", "data.augment.photometric=[]")
    plain.num_workers = 0
    unaugmented = torch.cat([b["image"] for b in plain.train_dataloader()])
    changed = (unaugmented != serial).flatten(1).any(dim=1)
    assert 0 < changed.sum() < len(changed)  # the list ran, with its probabilities


def test_faces_are_rendered_once_and_the_crops_do_not_change(compose_cfg):
    sizes = ("data.train_size=12", "data.val_size=3", "data.test_size=0")
    live = _synthetic_train(compose_cfg, *sizes).datasets["train"]
    assert isinstance(live.source, SyntheticFaces)
    keys = (0, 5, 11, 12 + 4)  # the last is face 4 in epoch 1
    expected = [live[key] for key in keys]
    for workers in (0, 2):
        datamodule = _synthetic_train(compose_cfg, *sizes)
        datamodule.num_workers = workers
        datamodule.train_dataloader()
        rendered = datamodule.datasets["train"].source
        assert isinstance(rendered, RecordSource) and len(rendered) == 12
        for key, want in zip(keys, expected, strict=True):
            got = datamodule.datasets["train"][key]
            for name in ("image", "landmarks", "landmarks_image", "visible", "attributes"):
                assert torch.equal(got[name], want[name]), (workers, key, name)
        datamodule.train_dataloader()
        assert datamodule.datasets["train"].source is rendered  # once, not per loader
        assert isinstance(datamodule.datasets["val"].source, SyntheticFaces)  # not used yet
        datamodule.val_dataloader()
        assert len(datamodule.datasets["val"].source) == 3


@pytest.mark.parametrize(("trainer_kwargs", "stage", "split", "rendered"), [
    ({"max_epochs": 3}, "fit", "train", True),
    ({"max_epochs": 3}, "fit", "val", True),
    ({"fast_dev_run": True}, "fit", "train", False),
    ({"max_epochs": 1}, "fit", "train", False),
    ({"max_epochs": 3, "limit_train_batches": 2}, "fit", "train", False),
    ({"max_epochs": 3}, "test", "test", False),
])
def test_faces_read_once_are_not_rendered_first(compose_cfg, trainer_kwargs, stage, split,
                                               rendered):
    datamodule = instantiate_node(compose_cfg("data.image_size=64", "data.train_size=8",
                                              "data.val_size=2", "data.test_size=2"), "data")
    datamodule.setup(None)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kwargs)
    trainer.state.fn = TrainerFn(stage)
    datamodule.trainer = trainer
    getattr(datamodule, f"{split}_dataloader")()
    source = datamodule.datasets[split].source
    assert isinstance(source, RecordSource if rendered else SyntheticFaces)


class _OneFace:
    """The same face at every index: crops may differ only through their augmentation."""

    def __init__(self, count):
        self.faces, self.count = SyntheticFaces(1, image_size=64, seed=0), count

    def __len__(self):
        return self.count

    def record(self, index):
        return self.faces.record(0)

    def load_image(self, index):
        return self.faces.load_image(0)


def test_workers_draw_independent_photometric_streams():
    augment = AugmentConfig(translate_prob=0, flip_prob=0, rotate_prob=0,
                            photometric=[A.GaussNoise(std_range=(0.1, 0.1), p=1.0)])
    dataset = FaceDataset(_OneFace(8), FaceTransform("gt_box", 64, augment, WFLW.flip_map),
                          get_meta("synthetic"), seed=0)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    images = torch.cat([b["image"] for b in loader])
    assert len({image.numpy().tobytes() for image in images}) == 8
    assert all(torch.equal(images[k], dataset[k]["image"]) for k in range(8))


@pytest.mark.parametrize(("photometric", "message"), [
    ([A.GaussNoise(), A.HorizontalFlip()],
     r"augment\.photometric\[1\]: albumentations\.HorizontalFlip is a geometric"),
    ([A.OneOf([A.Blur(), A.Affine()])],
     r"augment\.photometric\[0\]\.transforms\[1\]: albumentations\.Affine is a geometric"),
    ([A.RandomCrop(32, 32)], r"albumentations\.RandomCrop is a geometric"),
    ([np.flipud], "is not an albumentations transform"),
])
def test_geometric_transforms_are_refused_naming_them(photometric, message):
    with pytest.raises(ValueError, match=message) as err:
        AugmentConfig(photometric=photometric)
    if "geometric" in message:  # and the message says why
        assert "moves the landmarks exactly" in str(err.value)
        assert "renames left/right landmarks" in str(err.value)


def test_a_geometric_transform_in_the_config_stops_the_data_module(compose_cfg):
    cfg = compose_cfg("data.augment.photometric=[{_target_:albumentations.Rotate,limit:10}]")
    with pytest.raises(ConfigError, match=r"photometric\[0\]: albumentations\.Rotate is a geom"):
        instantiate_node(cfg, "data")


def test_a_bad_target_or_parameter_in_the_list_names_its_key(compose_cfg):
    cfg = compose_cfg("data.augment.photometric=[{_target_:albumentations.GaussNoise},"
                      "{_target_:albumentations.GausianBlur}]")
    with pytest.raises(ConfigError, match=r"'data\.augment\.photometric\[1\]\._target_': "
                                          r"cannot import 'albumentations\.GausianBlur'"):
        validate_config(cfg)
    cfg = compose_cfg("data.augment.photometric=[{_target_:albumentations.GaussianBlur,"
                      "sigma_limt:[0,3]}]")
    with pytest.raises(ConfigError, match=r"'data\.augment\.photometric\[0\]\.sigma_limt': "
                                          r"albumentations\.GaussianBlur has no parameter"):
        validate_config(cfg)


def test_published_yaml_is_the_python_default(compose_cfg):
    node, default = compose_cfg("data/augment=published").data.augment, AugmentConfig()
    for name in ("enabled", "translate_prob", "translate_px", "flip_prob", "rotate_prob",
                 "rotate_deg", "reference_size"):
        assert node[name] == getattr(default, name), name
    assert [repr(t) for t in _photometric_list(compose_cfg)] == \
        [repr(t) for t in default.photometric] == [repr(t) for t in published_photometric()]


def test_photometric_keeps_the_crop_shape_and_type():
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="keep the crop's shape"):
        Photometric([A.ToFloat(p=1.0)])(image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no rng"):
        FaceTransform("gt_box", 16, AugmentConfig(), WFLW.flip_map)(
            image, face(np.random.default_rng(0)), params=AugmentParams())
