"""Embedded default dataset: cartoon faces rendered from a WFLW-98 shape model.

Why: the project must train and test end to end with nothing to download. Faces are drawn
so that every landmark sits on a drawn feature with sub-pixel accuracy (polygon corners,
points on lines, and a small analytically anti-aliased dot centred exactly on each
landmark), so the quantization error HIH addresses is real: a model that reads the image
well can recover fractional positions, and a 64x64 integer heatmap alone cannot.

Conventions: RGB uint8 images; landmarks (98, 2) float64 in pixels, 0-based pixel centres
((0, 0) is the centre of the top-left pixel); attributes (6,) int64 in ``WFLW_SUBSETS``
order (pose, expression, illumination, makeup, occlusion, blur). A face is a pure function
of (seed, index): every random draw comes from generators spawned from
``SeedSequence([seed, index])``, one stream per concern, so toggling one attribute changes
only that attribute's effect.

Accuracy: landmark dots and pupils are soft discs (centroid error < 0.005 px); filled
polygons and lines are 4x supersampled coverage masks (cv2 fills boundary pixels
inclusively, so edges sit 0.125 px outwards on average, within 0.25 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from hih_lightning.data.metainfo import WFLW_SUBSETS
from hih_lightning.data.records import FaceRecord

ATTRIBUTES = WFLW_SUBSETS
DEFAULT_RATE = 0.15
SUPERSAMPLE = 4  # coverage masks are drawn at 4x and area-averaged
EDGE = 0.35  # logistic edge scale of the soft discs, in pixels
SHIFT = 4  # cv2 fixed-point bits: coordinates are given in 1/16 of a (supersampled) pixel
_STREAMS = ("flags", "shape", "pose", "expression", "place", "look", "background",
            "illumination", "makeup", "occlusion", "blur")

# Landmark chains of the WFLW-98 layout (checked against the mean shape of the real data).
CONTOUR = np.arange(0, 33)
LEFT_BROW, RIGHT_BROW = np.arange(33, 42), np.arange(42, 51)
NOSE_BRIDGE, NOSE_BOTTOM = np.arange(51, 55), np.arange(55, 60)
LEFT_EYE, RIGHT_EYE = np.arange(60, 68), np.arange(68, 76)
OUTER_LIP, INNER_LIP = np.arange(76, 88), np.arange(88, 96)
LOWER_LIP = np.array([83, 84, 85, 86, 87, 93, 94, 95])
LIP_CORNERS = np.array([76, 82, 88, 92])
PUPILS = (96, 97)


@dataclass(frozen=True)
class ShapeModel:
    """The embedded WFLW point-distribution model (see ``tools/build_shape_model.py``).

    ``mean`` is in inter-ocular units (outer eye corners 60 -> 72 horizontal, length 1,
    centroid at the origin, y down); ``modes`` are orthonormal, ``std`` their deviations.
    """

    mean: np.ndarray  # (98, 2)
    modes: np.ndarray  # (M, 98, 2)
    std: np.ndarray  # (M,)
    largepose_z: np.ndarray  # (F, M) standardised coefficients of WFLW large-pose faces
    num_faces: int


@lru_cache(maxsize=1)
def load_shape_model() -> ShapeModel:
    """Load the packaged shape model once per process."""
    path = resources.files("hih_lightning") / "assets" / "wflw_shape_model.npz"
    with resources.as_file(path) as file, np.load(file) as data:
        return ShapeModel(mean=data["mean"].astype(np.float64),
                          modes=data["modes"].astype(np.float64),
                          std=data["mode_std"].astype(np.float64),
                          largepose_z=data["largepose_z"].astype(np.float64),
                          num_faces=int(data["num_faces"]))


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """A fixed unit-variance noise tile; faces crop it at random offsets (cheap, deterministic)."""
    return np.random.default_rng(20240611).standard_normal((1024, 1024, 3), dtype=np.float32)


def _noise(r: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) window of the noise tile at a random offset."""
    tile = _noise_tile()
    if size > len(tile):
        reps = -(-size // len(tile))
        return np.tile(tile, (reps, reps, 1))[:size, :size]
    y, x = r.integers(0, len(tile) - size + 1, 2)
    return tile[y:y + size, x:x + size]


# ----------------------------------------------------------------------------- drawing


def disc_alpha(shape: tuple[int, int], center: np.ndarray, radius: float,
               origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Soft-edged disc on a pixel grid, sampled at pixel centres.

    The edge is a logistic ramp (width ~0.6 px) rather than a hard clip: a smooth profile
    has almost no aliasing, so the intensity-weighted centroid of the sampled disc equals
    ``center`` to ~0.003 px for any sub-pixel position (a clipped ramp is off by up to
    0.08 px for small discs). ``origin`` is the (x, y) pixel of the grid's top-left cell.
    """
    h, w = shape
    ys = np.arange(origin[1], origin[1] + h, dtype=np.float32)[:, None] - np.float32(center[1])
    xs = np.arange(origin[0], origin[0] + w, dtype=np.float32)[None, :] - np.float32(center[0])
    return _soft_edge(np.sqrt(xs * xs + ys * ys), radius)


def _soft_edge(distance: np.ndarray, radius: float) -> np.ndarray:
    z = np.minimum((distance - np.float32(radius)) * np.float32(1 / EDGE), np.float32(30))
    return (1.0 / (1.0 + np.exp(z))).astype(np.float32)


def paint_disc(image: np.ndarray, center: np.ndarray, radius: float, color: np.ndarray,
               opacity: float = 1.0) -> None:
    """Blend an exact anti-aliased disc into a float32 (H, W, C) image, in place."""
    h, w = image.shape[:2]
    pad = radius + 10 * EDGE
    x0 = max(int(np.floor(center[0] - pad)), 0)
    y0 = max(int(np.floor(center[1] - pad)), 0)
    x1 = min(int(np.ceil(center[0] + pad)) + 1, w)
    y1 = min(int(np.ceil(center[1] + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = disc_alpha((y1 - y0, x1 - x0), center, radius, (x0, y0)) * np.float32(opacity)
    roi = image[y0:y1, x0:x1]
    roi += (np.asarray(color, np.float32) - roi) * alpha[..., None]


def paint_dots(image: np.ndarray, centers: np.ndarray, radius: float, color: np.ndarray,
               opacity: float = 1.0) -> None:
    """Blend many same-colour soft discs at once (union of coverages = max)."""
    h, w = image.shape[:2]
    k = int(np.ceil(radius + 10 * EDGE))
    offsets = np.arange(-k, k + 1)
    base = np.floor(centers).astype(int)  # (N, 2)
    xs = base[:, 0, None] + offsets[None]  # (N, K)
    ys = base[:, 1, None] + offsets[None]
    dx = (xs - centers[:, 0, None])[:, None, :]
    dy = (ys - centers[:, 1, None])[:, :, None]
    alpha = _soft_edge(np.sqrt(dx * dx + dy * dy), radius) * np.float32(opacity)
    rows = np.broadcast_to(ys[:, :, None], alpha.shape)
    cols = np.broadcast_to(xs[:, None, :], alpha.shape)
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    canvas = np.zeros((h, w), np.float32)
    np.maximum.at(canvas, (rows[keep], cols[keep]), alpha[keep].astype(np.float32))
    x0, y0 = max(xs.min(), 0), max(ys.min(), 0)
    x1, y1 = min(xs.max() + 1, w), min(ys.max() + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    roi, a = image[y0:y1, x0:x1], canvas[y0:y1, x0:x1, None]
    roi += (np.asarray(color, np.float32) - roi) * a


def _fixed(points: np.ndarray, origin: np.ndarray, ss: int) -> np.ndarray:
    """Pixel coordinates -> cv2 fixed-point coordinates on the supersampled ROI grid."""
    hi = (np.asarray(points, np.float64) - origin + 0.5) * ss - 0.5
    return np.round(hi * (1 << SHIFT)).astype(np.int32)


def coverage(image_shape: tuple[int, int], polys: list[np.ndarray], *, fill: bool = True,
             thickness: float = 1.0, closed: bool = False,
             margin: float = 2.0, ss: int = SUPERSAMPLE
             ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Area coverage in [0, 1] of filled polygons or thick polylines over their bounding ROI.

    Returns ((x0, y0, x1, y1), alpha) or None when nothing falls inside the image. ``ss`` is
    the supersampling factor: edges land 1 / (2 ss) px outwards on average, within 1 / ss.
    """
    pts = np.concatenate(polys)
    pad = margin + (0 if fill else thickness)
    h, w = image_shape
    x0, y0 = np.maximum(np.floor(pts.min(0) - pad).astype(int), 0)
    x1 = min(int(np.ceil(pts[:, 0].max() + pad)) + 1, w)
    y1 = min(int(np.ceil(pts[:, 1].max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)
    origin = np.array([x0, y0], np.float64)
    fixed = [_fixed(p, origin, ss) for p in polys]
    if fill:
        cv2.fillPoly(mask, fixed, 255, cv2.LINE_8, SHIFT)
    else:
        cv2.polylines(mask, fixed, closed, 255, max(int(round(thickness * ss)), 1),
                      cv2.LINE_8, SHIFT)
    alpha = cv2.resize(mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return (x0, y0, x1, y1), alpha.astype(np.float32) * np.float32(1 / 255)


def paint(image: np.ndarray, color: np.ndarray, polys: list[np.ndarray], opacity: float = 1.0,
          **kwargs: float | bool) -> None:
    """Blend filled polygons (or, with ``fill=False``, polylines) into a float image."""
    cov = coverage(image.shape[:2], polys, **kwargs)
    if cov is None:
        return
    (x0, y0, x1, y1), alpha = cov
    if opacity != 1.0:
        alpha *= np.float32(opacity)
    roi = image[y0:y1, x0:x1]
    diff = np.asarray(color, np.float32) - roi
    diff *= alpha[..., None]
    roi += diff


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points."""
    x, y = points[:, :1], points[:, 1:]
    xa, ya = poly[:, 0][None], poly[:, 1][None]
    xb, yb = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (ya > y) != (yb > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = xa + (y - ya) * (xb - xa) / (yb - ya)
    return (crosses & (x < xs)).sum(axis=1) % 2 == 1


# ----------------------------------------------------------------------------- sampling


@dataclass
class _Face:
    """Everything geometric about one face, in image pixels."""

    landmarks: np.ndarray  # (98, 2)
    attributes: np.ndarray  # (6,)
    forehead: np.ndarray  # (K, 2) arc from landmark 0 over the brows to landmark 32
    hair: np.ndarray | None  # (K, 2) polygon behind the face
    neck: np.ndarray  # (4, 2)
    iod: float  # outer-eye-corner distance in pixels
    occluder: np.ndarray | None  # (K, 2) polygon


def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


class SyntheticFaces:
    """Map-style dataset of rendered faces with WFLW-98 landmarks and WFLW attribute flags.

    ``attribute_rates`` maps attribute names (``ATTRIBUTES``) to the probability that a face
    has that flag set; missing names use ``DEFAULT_RATE``. ``render(i)`` gives (image,
    landmarks, attributes); ``record(i)`` / ``load_image(i)`` make it a ``FaceSource``.
    """

    def __init__(self, num_samples: int, image_size: int = 256, seed: int = 0,
                 attribute_rates: dict[str, float] | None = None) -> None:
        unknown = set(attribute_rates or {}) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}; known: {ATTRIBUTES}")
        if num_samples < 0 or image_size < 32:
            raise ValueError("num_samples must be >= 0 and image_size >= 32")
        self.num_samples, self.image_size, self.seed = num_samples, image_size, seed
        rates = {name: DEFAULT_RATE for name in ATTRIBUTES} | dict(attribute_rates or {})
        self.rates = np.array([rates[name] for name in ATTRIBUTES], dtype=np.float64)
        self.model = load_shape_model()

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        image, landmarks, attributes = self.render(index)
        return {"image": image, "landmarks": landmarks, "attributes": attributes}

    def _streams(self, index: int) -> dict[str, np.random.Generator]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} faces")
        children = np.random.SeedSequence([self.seed, index]).spawn(len(_STREAMS))
        return {name: np.random.default_rng(c) for name, c in zip(_STREAMS, children, strict=True)}

    # -- geometry -----------------------------------------------------------------------

    def _shape(self, rng: dict[str, np.random.Generator], flags: np.ndarray
               ) -> tuple[np.ndarray, float]:
        """A normalised shape (inter-ocular units) and its in-plane roll in degrees."""
        m = self.model
        z = np.clip(rng["shape"].standard_normal(len(m.std)), -3, 3)
        r = rng["pose"]
        big = m.largepose_z[r.integers(len(m.largepose_z))] + 0.25 * r.standard_normal(len(m.std))
        yaw, roll_normal, roll_big = r.uniform(1.3, 2.6), r.normal(0, 9), r.uniform(25, 50)
        roll_sign, big_roll = r.choice([-1.0, 1.0]), r.random() < 0.5
        if flags[0]:  # large pose: a real large-pose face, strong yaw and/or strong roll
            z = np.clip(big, -3, 3)
            z[0] = np.sign(z[0] or 1.0) * max(abs(z[0]), yaw)
            roll = roll_sign * roll_big if big_roll else float(np.clip(roll_normal, -25, 25))
        else:  # mild yaw / pitch, roll within about +-25 deg
            z[0], z[1] = np.clip(z[0], -0.8, 0.8), np.clip(z[1], -1.2, 1.2)
            roll = float(np.clip(roll_normal, -25, 25))
        shape = m.mean + np.tensordot(z * m.std, m.modes, axes=1)

        e = rng["expression"]
        gap_small, gap_big = e.uniform(0.0, 0.06), e.uniform(0.25, 0.55)
        brow_raise, raise_brows = e.uniform(0.06, 0.14), e.random() < 0.7
        smile = e.uniform(-0.04, 0.08)
        gap = gap_big if flags[1] else gap_small
        delta = gap - max(shape[94, 1] - shape[90, 1], 0.0)
        shape[LOWER_LIP, 1] += delta
        shape[LIP_CORNERS, 1] += 0.5 * delta
        jaw = 0.6 * np.exp(-(((CONTOUR - 16) / 6.0) ** 2))
        shape[CONTOUR, 1] += delta * jaw
        if flags[1]:
            if raise_brows:
                shape[33:51, 1] -= brow_raise
            shape[LIP_CORNERS, 1] -= smile
        return shape, roll

    def _geometry(self, index: int) -> tuple[_Face, dict[str, np.random.Generator]]:
        rng = self._streams(index)
        flags = (rng["flags"].random(len(ATTRIBUTES)) < self.rates).astype(np.int64)
        shape, roll = self._shape(rng, flags)

        # Forehead and hair arcs, neck: built in the face frame, posed with the landmarks.
        p = rng["place"]
        left, right = shape[0], shape[32]
        mid, half = (left + right) / 2, np.linalg.norm(right - left) / 2
        top = mid[1] - shape[33:51, 1].min() + p.uniform(0.3, 0.5)
        t = np.linspace(0, np.pi, 17)[1:-1]
        axis = (right - left) / (2 * half)
        normal = np.array([axis[1], -axis[0]])  # points up (y down)
        forehead = mid + np.outer(-np.cos(t) * half, axis) + np.outer(np.sin(t) * top, normal)
        hair_h, hair_w, has_hair = p.uniform(0.08, 0.3), p.uniform(0.05, 0.2), p.random() < 0.65
        t2 = np.linspace(-0.25, np.pi + 0.25, 21)
        hair = mid + np.outer(-np.cos(t2) * (half + hair_w), axis) + np.outer(
            np.sin(t2) * (top + hair_h), normal)
        neck_w = p.uniform(0.35, 0.55)
        chin = shape[16]
        neck = np.array([chin + [-neck_w, -0.3], chin + [neck_w, -0.3],
                         chin + [neck_w * 1.2, 3.0], chin + [-neck_w * 1.2, 3.0]])

        # Similarity to pixels: the face spans 40-70% of the image side.
        size = self.image_size
        extent_pts = np.vstack([shape, forehead])
        extent = (extent_pts.max(0) - extent_pts.min(0)).max()
        frac = p.uniform(0.4, 0.7)
        scale = frac * size / extent
        center = (extent_pts.max(0) + extent_pts.min(0)) / 2
        slack = (1 - frac) / 2 * size * 0.8
        target = size / 2 - 0.5 + p.uniform(-slack, slack, 2)
        rot = _rotation(roll) * scale

        def pose(points: np.ndarray) -> np.ndarray:
            return (points - center) @ rot.T + target

        landmarks = pose(shape)
        iod = float(np.linalg.norm(landmarks[72] - landmarks[60]))

        occluder = None
        o = rng["occlusion"]
        kind, anchor = o.integers(3), o.choice([62, 70, 54, 79, 90, 8, 24, 16, 35, 44])
        w, h = o.uniform(0.6, 1.3, 2) * iod
        angle, jitter = o.uniform(0, 180), o.normal(0, 0.15, 2) * iod
        radii = o.uniform(0.6, 1.0, 12)
        if flags[4]:
            c = landmarks[anchor] + jitter
            if kind == 0:  # rotated rectangle
                corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [w / 2, h / 2]
            elif kind == 1:  # ellipse
                a = np.linspace(0, 2 * np.pi, 32, endpoint=False)
                corners = np.stack([np.cos(a) * w / 2, np.sin(a) * h / 2], 1)
            else:  # irregular blob (hand, hair strand, object)
                a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
                corners = np.stack([np.cos(a) * radii * w / 2, np.sin(a) * radii * h / 2], 1)
            occluder = corners @ _rotation(angle).T + c
        face = _Face(landmarks, flags, pose(forehead), pose(hair) if has_hair else None,
                     pose(neck), iod, occluder)
        return face, rng

    # -- public API ---------------------------------------------------------------------

    def record(self, index: int) -> FaceRecord:
        """The face's annotation, without rendering (``image_path`` is None)."""
        face, _ = self._geometry(index)
        lm = face.landmarks
        visible = None if face.occluder is None else ~_inside(lm, face.occluder)
        return FaceRecord(image_path=None, landmarks=lm.copy(),
                          box=np.concatenate([lm.min(0), lm.max(0)]),
                          attributes=face.attributes.copy(), visible=visible,
                          source=f"synthetic:seed={self.seed}:index={index}")

    def load_image(self, index: int) -> np.ndarray:
        """The rendered RGB uint8 image of face ``index``."""
        return self.render(index)[0]

    def _pupil_radius(self, face: _Face) -> float:
        """Pupil disc radius: it scales with the face so it stays visible at any size."""
        return max(0.05 * face.iod, 1.0)

    def render(self, index: int, *, only_pupils: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image HxWx3 uint8 RGB, landmarks (98, 2) float64, attributes (6,) int64).

        ``only_pupils`` draws just the two pupil discs, white on black, with the radii and
        routine of the real render (for testing that they are centred on 96 and 97).
        """
        face, rng = self._geometry(index)
        size = self.image_size
        if only_pupils:
            canvas = np.zeros((size, size, 1), np.float32)
            for k in PUPILS:
                paint_disc(canvas, face.landmarks[k], self._pupil_radius(face), np.float32([255]))
            image = np.repeat(np.round(canvas).astype(np.uint8), 3, axis=2)
            return image, face.landmarks.copy(), face.attributes.copy()
        image = self._background(rng["background"])
        self._draw_face(image, face, rng)
        self._finish(image, face, rng)
        np.clip(image, 0, 255, out=image)
        out = cv2.convertScaleAbs(image)  # rounds to nearest and saturates
        return out, face.landmarks.copy(), face.attributes.copy()

    # -- appearance -----------------------------------------------------------------------

    def _background(self, r: np.random.Generator) -> np.ndarray:
        """Gradient plus random shapes and lines: clutter a detector-free model must ignore."""
        size = self.image_size
        corners = r.uniform(0, 255, (2, 2, 3)).astype(np.uint8)  # bilinear colour gradient
        image = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)
        for _ in range(r.integers(3, 9)):
            kind, color = r.integers(4), tuple(float(v) for v in r.uniform(0, 255, 3))
            p = (r.uniform(-0.1, 1.1, 4) * size * 16).astype(int)
            if kind == 0:
                cv2.circle(image, (p[0], p[1]), int(r.uniform(0.03, 0.25) * size * 16), color,
                           -1, cv2.LINE_AA, SHIFT)
            elif kind == 1:
                cv2.rectangle(image, (p[0], p[1]), (p[2], p[3]), color, -1, cv2.LINE_AA, SHIFT)
            elif kind == 2:
                cv2.line(image, (p[0], p[1]), (p[2], p[3]), color, int(r.integers(1, 6)),
                         cv2.LINE_AA, SHIFT)
            else:
                pts = (r.uniform(-0.1, 1.1, (5, 2)) * size * 16).astype(np.int32)
                cv2.fillPoly(image, [pts], color, cv2.LINE_AA, SHIFT)
        image = image.astype(np.float32)
        if r.random() < 0.4:  # texture
            image += _noise(r, size) * np.float32(r.uniform(8, 30))
        return image

    def _draw_face(self, image: np.ndarray, face: _Face,
                   rng: dict[str, np.random.Generator]) -> None:
        lm, iod, flags = face.landmarks, face.iod, face.attributes
        r, mk = rng["look"], rng["makeup"]
        tone = r.uniform(0, 1)
        skin = (np.array([238, 204, 178]) * (1 - tone) + np.array([96, 62, 44]) * tone
                + r.normal(0, 8, 3))
        hair_color = np.array([[30, 22, 18], [70, 45, 25], [140, 95, 50], [200, 170, 110],
                               [150, 150, 150], [120, 40, 20]])[r.integers(6)] * r.uniform(
                                   0.8, 1.2)
        brow_color = hair_color * r.uniform(0.6, 1.0) + skin * 0.15
        iris_color = np.array([[70, 45, 25], [60, 110, 160], [80, 120, 70], [110, 80, 40],
                               [40, 30, 25]])[r.integers(5)] * r.uniform(0.8, 1.2)
        sclera = r.uniform(215, 250) * np.array([1.0, 0.98, 0.96])
        ink = skin * r.uniform(0.25, 0.45)  # landmark dots: a darker shade
        plain_lips = skin * 0.72 + np.array([150, 60, 60]) * 0.28 * r.uniform(0.6, 1.2)
        palette = np.array([[200, 20, 40], [150, 0, 60], [220, 40, 120], [120, 20, 140],
                            [230, 70, 30], [170, 0, 20]], np.float64)
        bold_lips = palette[mk.integers(len(palette))] * mk.uniform(0.85, 1.1)
        shadow = np.array([[40, 70, 200], [130, 40, 170], [30, 150, 90], [220, 80, 160],
                           [150, 90, 30]])[mk.integers(5)]
        shadow_height, shadow_opacity = mk.uniform(0.1, 0.16), mk.uniform(0.55, 0.8)
        lip_color = bold_lips if flags[3] else plain_lips
        line_w = max(0.02 * iod, 0.8)

        face_poly = np.vstack([lm[CONTOUR], face.forehead[::-1]])
        if face.hair is not None:
            paint(image, hair_color, [face.hair], ss=2)
        paint(image, skin * 0.85, [face.neck], ss=2)
        paint(image, skin, [face_poly])
        paint(image, skin * 0.7, [lm[CONTOUR]], fill=False, thickness=line_w)
        face_up = (lm[51] - lm[54]) / max(np.linalg.norm(lm[51] - lm[54]), 1e-6)
        if flags[3]:  # eye shadow above each upper lid, blush on the cheeks
            for eye in (LEFT_EYE, RIGHT_EYE):
                lid, centre = lm[eye[:5]], lm[eye].mean(0)
                up = centre + (lid - centre) * 1.25 + face_up * shadow_height * iod
                paint(image, shadow, [np.vstack([lid, up[::-1]])], opacity=shadow_opacity, ss=2)
        paint(image, brow_color, [lm[LEFT_BROW], lm[RIGHT_BROW]])
        paint(image, skin * 0.55, [lm[NOSE_BRIDGE], lm[NOSE_BOTTOM]], fill=False,
              thickness=line_w * 1.2)
        for eye, pupil in ((LEFT_EYE, 96), (RIGHT_EYE, 97)):
            cov = coverage(image.shape[:2], [lm[eye]])
            if cov is None:
                continue
            (x0, y0, x1, y1), alpha = cov
            roi = image[y0:y1, x0:x1]
            roi += (sclera.astype(np.float32) - roi) * alpha[..., None]
            iris = disc_alpha(alpha.shape, lm[pupil], 0.13 * iod, (x0, y0)) * alpha
            roi += (iris_color.astype(np.float32) - roi) * iris[..., None]
            paint_disc(image, lm[pupil], self._pupil_radius(face), np.float32([15, 12, 12]))
            paint(image, skin * 0.3, [lm[eye]], fill=False, closed=True, thickness=line_w)
            paint(image, skin * 0.15, [lm[eye[:5]]], fill=False, thickness=line_w * 1.8)
        paint(image, lip_color, [lm[OUTER_LIP]])
        paint(image, np.array([70, 25, 30]), [lm[INNER_LIP]])
        paint(image, lip_color * 0.6, [lm[INNER_LIP]], fill=False, closed=True,
              thickness=line_w)
        paint_dots(image, lm[:96], max(0.014 * iod, 0.8), ink, opacity=0.85)

    def _finish(self, image: np.ndarray, face: _Face,
                rng: dict[str, np.random.Generator]) -> None:
        """Occluder, lighting, global colour, blur and sensor noise, in that order."""
        size, flags, iod = self.image_size, face.attributes, face.iod
        o = rng["occlusion"]
        color, textured = o.uniform(0, 255, 3), o.random() < 0.5
        stripe = o.uniform(0, 255, 3)
        if face.occluder is not None:
            cov = coverage(image.shape[:2], [face.occluder], ss=2)
            if cov is not None:
                (x0, y0, x1, y1), alpha = cov
                fill = np.empty((y1 - y0, x1 - x0, 3), np.float32)
                fill[:] = color
                if textured:
                    yy, xx = np.mgrid[y0:y1, x0:x1]
                    bands = ((xx + yy) // max(int(0.12 * iod), 2)) % 2 == 1
                    fill[bands] = stripe
                roi = image[y0:y1, x0:x1]
                roi += (fill - roi) * alpha[..., None]

        li = rng["illumination"]
        theta = li.uniform(0, 2 * np.pi)
        low, high, mild = li.uniform(0.12, 0.35), li.uniform(1.3, 1.8), li.uniform(0.85, 1.15, 2)
        exposure = li.choice([1.0, li.uniform(0.55, 0.8), li.uniform(1.15, 1.35)])
        if not flags[2]:
            low, high, exposure = min(mild), max(mild), 1.0
        # Gain varies linearly along a direction, from `low` to `high` across the face.
        span = 1.2 * (face.landmarks.max(0) - face.landmarks.min(0)).max()
        centre = face.landmarks.mean(0)
        coarse = 32  # the gain is smooth: compute it coarsely, upsample bilinearly
        ramp = (np.arange(coarse) + 0.5) * (size / coarse) - 0.5
        u = (np.cos(theta) * (ramp[None, :] - centre[0])
             + np.sin(theta) * (ramp[:, None] - centre[1])) / span + 0.5
        gain = ((low + (high - low) * np.clip(u, 0, 1)) * exposure).astype(np.float32)
        gain = cv2.resize(gain, (size, size), interpolation=cv2.INTER_LINEAR)
        tint = rng["look"].uniform(0.85, 1.15, 3).astype(np.float32)
        image *= gain[..., None]
        image *= tint

        b = rng["blur"]
        sigma, length, angle, motion = b.uniform(1.6, 3.2), b.uniform(7, 15), b.uniform(0, 180), (
            b.random() < 0.5)
        mild_sigma, mild_on = b.uniform(0.3, 0.6), b.random() < 0.3
        px = size / 256
        if flags[5] and motion:  # a centred line kernel: blurs without moving features
            n = int(np.ceil(length * px)) | 1
            kernel = np.zeros((n, n), np.float32)
            c = (n - 1) / 2
            d = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))]) * c
            cv2.line(kernel, tuple(int(v) for v in np.round((c - d) * 16)),
                     tuple(int(v) for v in np.round((c + d) * 16)), 1.0, 1, cv2.LINE_AA, SHIFT)
            kernel = (kernel + kernel[::-1, ::-1]) / (2 * kernel.sum())  # exactly symmetric
            cv2.filter2D(image, -1, kernel, dst=image, borderType=cv2.BORDER_REFLECT)
        elif flags[5] or mild_on:
            s = (sigma if flags[5] else mild_sigma) * px
            cv2.GaussianBlur(image, (0, 0), s, dst=image, borderType=cv2.BORDER_REFLECT)

        image += _noise(b, size) * np.float32(b.uniform(1.0, 5.0))
