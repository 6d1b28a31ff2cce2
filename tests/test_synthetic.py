"""The embedded synthetic faces: deterministic, landmarks on the drawn features, flags honoured."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hih_lightning.data import synthetic
from hih_lightning.data.metainfo import WFLW, WFLW_SUBSETS
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.synthetic import (
    SyntheticFaces,
    coverage,
    disc_alpha,
    load_shape_model,
    paint_disc,
    paint_dots,
)

NONE = {name: 0.0 for name in WFLW_SUBSETS}


def _centroid(weights: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]]
    w = weights.astype(np.float64)
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def _iod(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[72] - landmarks[60]))


def _face_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    cov = coverage((size, size), [landmarks[:33]])
    assert cov is not None
    (x0, y0, x1, y1), alpha = cov
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = alpha > 0.99
    return mask


def _pair(name: str, n: int = 12, size: int = 128) -> list[tuple]:
    """The same faces with flag ``name`` forced off and on (everything else identical)."""
    off = SyntheticFaces(n, size, seed=5, attribute_rates={**NONE, name: 0.0})
    on = SyntheticFaces(n, size, seed=5, attribute_rates={**NONE, name: 1.0})
    return [(off.render(i), on.render(i)) for i in range(n)]


def test_deterministic_and_order_independent() -> None:
    a = SyntheticFaces(10, 128, seed=3)
    b = SyntheticFaces(10, 128, seed=3)
    img5, lm5, at5 = a.render(5)
    img3, lm3, _ = a.render(3)
    img3b, lm3b, _ = b.render(3)
    img5b, lm5b, at5b = b.render(5)
    assert np.array_equal(img5, img5b) and np.array_equal(lm5, lm5b)
    assert np.array_equal(at5, at5b)
    assert np.array_equal(img3, img3b) and np.array_equal(lm3, lm3b)
    assert not np.array_equal(img3, img5) and not np.allclose(lm3, lm5)
    other_seed = SyntheticFaces(10, 128, seed=4).render(5)
    assert not np.allclose(other_seed[1], lm5)
    record = a.record(5)
    assert isinstance(record, FaceRecord) and record.image_path is None
    assert np.array_equal(record.landmarks, lm5) and np.array_equal(record.attributes, at5)
    assert np.array_equal(a.load_image(5), img5)
    assert img5.shape == (128, 128, 3) and img5.dtype == np.uint8
    assert lm5.shape == (98, 2) and lm5.dtype == np.float64
    assert at5.shape == (6,) and at5.dtype == np.int64
    with pytest.raises(IndexError):
        a.render(10)


def test_disc_pixel_centre_convention() -> None:
    canvas = np.zeros((40, 40, 1), np.float32)
    paint_disc(canvas, np.array([10.0, 20.0]), 2.0, np.float32([255]))
    cx, cy = _centroid(canvas[..., 0])
    assert abs(cx - 10.0) < 1e-4 and abs(cy - 20.0) < 1e-4
    assert canvas[20, 10, 0] > 250 and canvas[10, 20, 0] == 0  # row 20, column 10


@pytest.mark.parametrize("radius", [0.8, 1.3, 2.5])
def test_disc_centroid_sub_pixel(radius: float) -> None:
    rng = np.random.default_rng(0)
    for center in rng.uniform(8, 24, (20, 2)):
        canvas = np.zeros((32, 32, 1), np.float32)
        paint_disc(canvas, center, radius, np.float32([255]))
        assert np.abs(_centroid(canvas[..., 0]) - center).max() < 0.01
        # The batched routine used for the landmark dots agrees.
        dots = np.zeros((32, 32, 1), np.float32)
        paint_dots(dots, center[None], radius, np.float32([255]))
        assert np.abs(_centroid(dots[..., 0]) - center).max() < 0.01
        # Sub-pixel shifts are visible in the image: a 0.25 px move changes the centroid.
        alpha = disc_alpha((32, 32), center + [0.25, 0.0], radius)
        assert abs(_centroid(alpha)[0] - center[0] - 0.25) < 0.01


def test_supersampled_polygon_edges_are_accurate() -> None:
    # A square's coverage has the square's centroid and its area, up to the documented
    # inclusive-fill dilation (1/8 px outwards on average, within 1/4 px).
    rng = np.random.default_rng(1)
    for corner in rng.uniform(5, 15, (10, 2)):
        square = corner + np.array([[0, 0], [8, 0], [8, 8], [0, 8]], np.float64)
        cov = coverage((32, 32), [square], margin=0)
        assert cov is not None
        (x0, y0, _, _), alpha = cov
        full = np.zeros((32, 32), np.float32)
        full[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]] = alpha
        assert np.abs(_centroid(full) - (corner + 4)).max() < 0.15
        assert abs(full.sum() - 64 - 0.125 * 32) < 0.1 * 32


def test_pupils_centred_on_landmarks() -> None:
    ds = SyntheticFaces(6, 256, seed=2)
    for i in range(6):
        mask, lm, _ = ds.render(i, only_pupils=True)
        for k in (96, 97):
            x, y = np.round(lm[k]).astype(int)
            r = 12
            if not (r <= x < 256 - r and r <= y < 256 - r):
                continue
            window = mask[y - r:y + r + 1, x - r:x + r + 1, 0].astype(np.float64)
            # Keep only the disc around this pupil (the other may share the window).
            ys, xs = np.mgrid[-r:r + 1, -r:r + 1]
            window[np.hypot(xs + x - lm[k, 0], ys + y - lm[k, 1]) > 0.6 * _iod(lm)] = 0
            centroid = _centroid(window) + [x - r, y - r]
            assert np.abs(centroid - lm[k]).max() < 0.1


def test_every_landmark_dot_is_drawn_on_its_landmark(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each of the 96 non-pupil landmarks gets a dot centred exactly on it (paint_dots' own
    # sub-pixel accuracy is tested above), and every dot shows in the finished image: the
    # render without dots differs within one pixel of each landmark. (Darker than its
    # surroundings it is not always: a dot on a brow or an eye outline is lighter than them.)
    ds = SyntheticFaces(8, 256, seed=7, attribute_rates=NONE)
    drawn: list[np.ndarray] = []

    def recording(image, centers, *args, **kwargs):
        drawn.append(np.array(centers))
        return paint_dots(image, centers, *args, **kwargs)

    for i in range(8):
        drawn.clear()
        monkeypatch.setattr(synthetic, "paint_dots", recording)
        image, lm, _ = ds.render(i)
        monkeypatch.setattr(synthetic, "paint_dots", lambda *args, **kwargs: None)
        bare, _, _ = ds.render(i)
        assert len(drawn) == 1 and np.array_equal(drawn[0], lm[:96])
        change = np.abs(image.astype(np.int64) - bare.astype(np.int64)).max(axis=2)
        for x, y in np.round(lm[:96]).astype(int):
            assert 1 <= x < 255 and 1 <= y < 255  # (all inside for these faces)
            assert change[y - 1:y + 2, x - 1:x + 2].max() >= 5, (i, x, y)


def test_landmarks_inside_and_face_size() -> None:
    ds = SyntheticFaces(40, 256, seed=11)
    inside, iods = [], []
    for i in range(40):
        record = ds.record(i)
        lm = record.landmarks
        inside.append(((lm >= 0) & (lm <= 255)).all(axis=1).mean())
        if record.attributes[0] == 0:  # large yaw foreshortens the eye-corner distance
            iods.append(_iod(lm))
    assert np.mean(inside) > 0.95
    assert 0.15 * 256 < min(iods) and max(iods) < 0.45 * 256
    # Attribute rates are honoured on average.
    attrs = np.stack([SyntheticFaces(400, 64, seed=1).record(i).attributes for i in range(400)])
    assert np.all(np.abs(attrs.mean(0) - 0.15) < 0.07)


def test_shape_model() -> None:
    m = load_shape_model()
    assert m.mean.shape == (98, 2) and m.num_faces > 1000
    flat = m.modes.reshape(len(m.modes), -1)
    assert np.allclose(flat @ flat.T, np.eye(len(flat)), atol=1e-4)
    assert np.all(np.diff(m.std) <= 0) and m.std[0] > 0
    assert abs(np.linalg.norm(m.mean[72] - m.mean[60]) - 1.0) < 1e-5
    mirrored = m.mean[list(WFLW.flip_map)] * [-1, 1]
    assert np.abs(mirrored - m.mean).max() < 0.05
    # Image layout: left eye on the left, eyes above the nose above the mouth above the chin.
    assert m.mean[60, 0] < m.mean[72, 0] and m.mean[96, 0] < m.mean[97, 0]
    assert m.mean[96, 1] < m.mean[54, 1] < m.mean[90, 1] < m.mean[16, 1]


def test_pose_flag() -> None:
    rolls, yaws = {0: [], 1: []}, {0: [], 1: []}
    for flag in (0, 1):
        ds = SyntheticFaces(40, 64, seed=9, attribute_rates={**NONE, "pose": float(flag)})
        for i in range(40):
            lm = ds.record(i).landmarks
            d = lm[72] - lm[60]
            rolls[flag].append(abs(np.degrees(np.arctan2(d[1], d[0]))))
            # yaw-like asymmetry: nose tip distance to the two sides of the jaw
            a, b = np.linalg.norm(lm[54] - lm[0]), np.linalg.norm(lm[54] - lm[32])
            yaws[flag].append(abs(np.log(a / b)))
    assert max(rolls[0]) <= 26
    assert np.mean(rolls[1]) > np.mean(rolls[0]) + 5
    assert np.mean(yaws[1]) > 2 * np.mean(yaws[0])


def test_expression_flag() -> None:
    opening = {0: [], 1: []}
    for (_, lm0, _), (_, lm1, at1) in _pair("expression"):
        assert at1[1] == 1
        opening[0].append(np.linalg.norm(lm0[94] - lm0[90]) / _iod(lm0))
        opening[1].append(np.linalg.norm(lm1[94] - lm1[90]) / _iod(lm1))
    assert max(opening[0]) < 0.12 and min(opening[1]) > 0.2


def test_blur_flag() -> None:
    sharp, blurred = [], []
    for (img0, lm0, _), (img1, lm1, at1) in _pair("blur"):
        assert at1[5] == 1 and np.array_equal(lm0, lm1)
        mask = _face_mask(lm0, img0.shape[0])
        for img, out in ((img0, sharp), (img1, blurred)):
            lap = cv2.Laplacian(img.astype(np.float64).mean(axis=2), cv2.CV_64F)
            out.append(lap[mask].var())
    assert np.median(np.array(blurred) / np.array(sharp)) < 0.5


def test_occlusion_flag() -> None:
    changed = []
    for (img0, lm0, _), (img1, _, at1) in _pair("occlusion"):
        assert at1[4] == 1
        mask = _face_mask(lm0, img0.shape[0])
        diff = np.abs(img1.astype(int) - img0.astype(int)).max(axis=2) > 20
        changed.append(diff[mask].mean())
    assert np.median(changed) > 0.1
    assert SyntheticFaces(3, 64, attribute_rates=NONE).record(0).visible is None
    occluded = SyntheticFaces(3, 64, attribute_rates={**NONE, "occlusion": 1.0}).record(0)
    assert occluded.visible is not None and not occluded.visible.all()


def test_illumination_flag() -> None:
    def gradient(image: np.ndarray, mask: np.ndarray, iod: float) -> float:
        ys, xs = np.nonzero(mask)
        lum = image[ys, xs].astype(np.float64).mean(axis=1)
        design = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
        coef = np.linalg.lstsq(design, lum, rcond=None)[0]
        return float(np.hypot(*coef[:2]) * iod / max(lum.mean(), 1.0))

    flat, lit = [], []
    for (img0, lm0, _), (img1, _, at1) in _pair("illumination"):
        assert at1[2] == 1
        mask = _face_mask(lm0, img0.shape[0])
        flat.append(gradient(img0, mask, _iod(lm0)))
        lit.append(gradient(img1, mask, _iod(lm0)))
    assert np.mean(lit) > 3 * np.mean(flat)


def test_makeup_flag() -> None:
    plain, made_up = [], []
    for (img0, lm0, _), (img1, _, at1) in _pair("makeup"):
        assert at1[3] == 1
        size = img0.shape[0]
        cov = coverage((size, size), [lm0[76:88]])
        assert cov is not None
        (x0, y0, x1, y1), alpha = cov
        lips = np.zeros((size, size), bool)
        lips[y0:y1, x0:x1] = alpha > 0.99
        inner = coverage((size, size), [lm0[88:96]], fill=False, closed=True, thickness=3)
        if inner is not None:  # drop the mouth opening and the line around it
            (a0, b0, a1, b1), alpha = coverage((size, size), [lm0[88:96]], margin=3)
            lips[b0:b1, a0:a1] &= alpha < 0.01
            (a0, b0, a1, b1), alpha = inner
            lips[b0:b1, a0:a1] &= alpha < 0.01
        if lips.sum() < 5:
            continue
        for img, out in ((img0, plain), (img1, made_up)):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            out.append(hsv[..., 1][lips].mean())
    assert len(plain) >= 6
    assert np.mean(made_up) > np.mean(plain) + 40
