"""Crop protocol + augmentation as ONE affine warp per sample (HIH_SPEC section 5).

Frames. A landmark is always a float (x, y) in a named frame, with the pixel-centre convention:
(0, 0) is the centre of the top-left pixel, so an image of width W spans [-0.5, W - 0.5].

- *image px*: the original image (what :class:`~hih_lightning.data.records.FaceRecord` holds);
- *crop px*: the ``out_size`` x ``out_size`` network input after crop and augmentation.

The only way across is a 2x3 float64 affine ``M`` (image px -> crop px) built by
:func:`compose` from the crop box (:func:`crop_box`, :func:`crop_matrix`) and the sampled
geometric augmentation; :func:`apply_to_landmarks` moves points, :func:`warp_image` moves
pixels with the very same matrix (``cv2.warpAffine`` also uses the pixel-centre convention),
and :func:`invert` goes back. Resampling happens once, so augmentation adds no extra blur and
padding outside the image is zero (black), as in the published offline crops. Pixel-level
augmentation (blur, occlusion, colour, noise...) then runs on the crop: the ``photometric``
list of albumentations transforms (:mod:`hih_lightning.data.photometric`).

A horizontal flip also renames landmarks (the left eye becomes the right eye): after moving
the points, index ``i`` becomes ``flip_map[i]``; :class:`FaceTransform` does this for you.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import cv2
import numpy as np

from hih_lightning.data.photometric import Photometric, check_photometric, published_photometric
from hih_lightning.data.records import FaceRecord

CropProtocol = Literal["gt_box", "dataset_box", "center_scale"]
CROP_PROTOCOLS = get_args(CropProtocol)
# gt_box: the published HIH / PFLD protocol. dataset_box: the PIPNet practice (detector rect).
# center_scale: HRNet's CSVs store side = scale * 200; HRNet's loader enlarges it by 1.25.
DEFAULT_FACTORS = {"gt_box": 1.2, "dataset_box": 1.2, "center_scale": 1.25}

__all__ = [
    "CROP_PROTOCOLS",
    "CropProtocol",
    "DEFAULT_FACTORS",
    "AugmentConfig",
    "AugmentParams",
    "FaceTransform",
    "apply_to_landmarks",
    "compose",
    "crop_box",
    "crop_matrix",
    "invert",
    "sample_augmentation",
    "warp_image",
]


# -- crop protocol ----------------------------------------------------------------------------
def crop_box(record_or_landmarks: FaceRecord | np.ndarray, protocol: CropProtocol = "gt_box", *,
             box: np.ndarray | Sequence[float] | None = None,
             center: np.ndarray | Sequence[float] | None = None,
             scale: float | None = None, factor: float | None = None,
             source: str = "") -> tuple[float, float, float]:
    """Square crop (cx, cy, side) in image px for a named protocol.

    - ``gt_box``: centred on the ground-truth landmark bounding box, side = factor x max(w, h)
      (factor 1.2: the published protocol);
    - ``dataset_box``: the dataset's detector rect (x1, y1, x2, y2), centred on it,
      side = factor x max(w, h) (factor 1.2, PIPNet practice);
    - ``center_scale``: HRNet CSV style, centre given, side = scale x 200 x factor (factor
      1.25 is what HRNet's loader does; pass ``factor=1.0`` for the raw box).

    A :class:`FaceRecord` supplies landmarks, box, centre, scale and source; explicit keyword
    arguments override it. ``factor=None`` means the protocol's default.
    """
    if isinstance(record_or_landmarks, FaceRecord):
        record = record_or_landmarks
        landmarks = record.landmarks
        box = record.box if box is None else box
        center = record.center if center is None else center
        scale = record.scale if scale is None else scale
        source = source or record.source
    else:
        landmarks = np.asarray(record_or_landmarks, dtype=np.float64)
    if protocol not in CROP_PROTOCOLS:
        raise ValueError(f"unknown crop protocol {protocol!r}; valid: {CROP_PROTOCOLS}")
    factor = DEFAULT_FACTORS[protocol] if factor is None else float(factor)
    where = source or "<record without source>"

    if protocol == "gt_box":
        lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
        (cx, cy), side = (lo + hi) / 2, factor * float(np.max(hi - lo))
    elif protocol == "dataset_box":
        if box is None:
            raise ValueError(f"{where}: crop protocol 'dataset_box' needs the dataset's "
                             "detector box, but the record has none")
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, factor * max(x2 - x1, y2 - y1)
    else:
        if center is None or scale is None:
            raise ValueError(f"{where}: crop protocol 'center_scale' needs the dataset's centre "
                             "and scale, but the record lacks them")
        cx, cy = (float(v) for v in np.asarray(center, dtype=np.float64).reshape(2))
        side = float(scale) * 200.0 * factor
    if not side > 0:
        raise ValueError(f"{where}: crop protocol {protocol!r} gives a degenerate side {side}")
    return float(cx), float(cy), float(side)


def crop_matrix(cx: float, cy: float, side: float, out_size: int) -> np.ndarray:
    """2x3 float64 image px -> crop px: [cx -+ side/2] maps onto [-0.5, out_size - 0.5]."""
    s = out_size / side
    return np.array([[s, 0.0, -0.5 - s * (cx - side / 2)],
                     [0.0, s, -0.5 - s * (cy - side / 2)]], dtype=np.float64)


# -- augmentation -----------------------------------------------------------------------------
@dataclass
class AugmentConfig:
    """The published online augmentation recipe; every probability and magnitude settable.

    Geometry is drawn here and applied as one affine warp; the translation refers to a
    ``reference_size`` crop (256) and scales with the output size. ``photometric`` is the list
    of pixel-level albumentations transforms applied to the crop after the warp (by default the
    published blur and occlusion, as in ``conf/data/augment/published.yaml``); geometric ones
    are refused. Defaults follow HIH_SPEC section 5: no scale or colour jitter.
    """

    enabled: bool = True
    translate_prob: float = 0.5
    translate_px: float = 30.0
    flip_prob: float = 0.5
    rotate_prob: float = 0.5
    rotate_deg: float = 30.0
    reference_size: int = 256
    # zoom by U(1 - scale_delta, 1 + scale_delta) about the crop centre (not in the published
    # recipe): makes a model tolerant of a face box that is not the landmark box, e.g. a
    # detector's. Drawn last and only when scale_prob > 0, so other recipes draw as before.
    scale_prob: float = 0.0
    scale_delta: float = 0.0
    photometric: Sequence[Any] = field(default_factory=published_photometric)

    def __post_init__(self) -> None:
        if not 0.0 <= self.scale_delta < 1.0:
            raise ValueError(f"augment.scale_delta must be in [0, 1), got {self.scale_delta}")
        self.photometric = check_photometric(self.photometric)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation (evaluation)."""
        return cls(enabled=False, photometric=())


@dataclass(frozen=True)
class AugmentParams:
    """One sample's geometric augmentation, fully determined (identity by default).

    ``translate`` is in crop px; ``angle`` in degrees, positive = counter-clockwise on screen
    (OpenCV's convention); ``scale`` > 1 enlarges the face in the crop.
    """

    translate: tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    angle: float = 0.0
    scale: float = 1.0


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig,
                        out_size: int = 256) -> AugmentParams:
    """Draw one sample's geometry in the published order, each with its probability."""
    if not cfg.enabled:
        return AugmentParams()
    px = out_size / cfg.reference_size
    translate = (0.0, 0.0)
    if rng.random() < cfg.translate_prob:
        tx, ty = rng.uniform(-cfg.translate_px, cfg.translate_px, size=2) * px
        translate = (float(tx), float(ty))
    flip = bool(rng.random() < cfg.flip_prob)
    angle = 0.0
    if rng.random() < cfg.rotate_prob:
        angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    scale = 1.0
    if cfg.scale_prob > 0 and rng.random() < cfg.scale_prob:
        scale = float(rng.uniform(1.0 - cfg.scale_delta, 1.0 + cfg.scale_delta))
    return AugmentParams(translate, flip, angle, scale)


def compose(crop: np.ndarray, augment: AugmentParams | None = None,
            out_size: int = 256) -> np.ndarray:
    """2x3 float64 image px -> augmented crop px: crop, then translate, flip, rotate, zoom.

    Flip is ``x' = (S - 1) - x``; rotation and zoom are about the crop centre
    ((S-1)/2, (S-1)/2), all in the pixel-centre convention. The caller still renames landmarks when
    ``augment.flip`` (see :class:`FaceTransform`).
    """
    m = np.vstack([np.asarray(crop, dtype=np.float64), [0.0, 0.0, 1.0]])
    if augment is None:
        return m[:2].copy()
    last = out_size - 1.0
    tx, ty = augment.translate
    m = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]) @ m
    if augment.flip:
        m = np.array([[-1.0, 0.0, last], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    if augment.angle:
        c = last / 2
        cos, sin = math.cos(math.radians(augment.angle)), math.sin(math.radians(augment.angle))
        rot = np.array([[cos, sin, c - cos * c - sin * c],
                        [-sin, cos, c + sin * c - cos * c],
                        [0.0, 0.0, 1.0]])
        m = rot @ m
    if augment.scale != 1.0:
        c, k = last / 2, augment.scale
        m = np.array([[k, 0.0, c - k * c], [0.0, k, c - k * c], [0.0, 0.0, 1.0]]) @ m
    return m[:2].copy()


# -- moving points and pixels -----------------------------------------------------------------
def apply_to_landmarks(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with a 2x3 affine; float64 out."""
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (crop px -> image px for a crop matrix), float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear, -linear @ matrix[:, 2:3]])


def warp_image(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Resample ``image`` into the ``out_size`` square crop; outside the image is zero.

    Bilinear (no anti-aliasing: crops that shrink a face by more than ~2x alias slightly).
    """
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (out_size, out_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# -- the one call data modules make -----------------------------------------------------------
class FaceTransform:
    """Image + landmarks -> network crop: protocol box, augmentation, one warp, flip renaming,
    then the pixel-level ``photometric`` list on the crop.

    Args:
        protocol: one of :data:`CROP_PROTOCOLS` — always explicit, never implicit.
        out_size: crop side in pixels (256 for HIH).
        augment: an :class:`AugmentConfig` (or a mapping of its fields, e.g. from Hydra);
            ``None`` = no augmentation.
        flip_map: the dataset's mirror map (``meta.flip_map``); required when flips can happen.
        factor: box enlargement; ``None`` = the protocol's default (:data:`DEFAULT_FACTORS`).
    """

    def __init__(self, protocol: CropProtocol = "gt_box", out_size: int = 256,
                 augment: AugmentConfig | Mapping[str, Any] | None = None,
                 flip_map: Sequence[int] | None = None,
                 factor: float | None = None) -> None:
        if protocol not in CROP_PROTOCOLS:
            raise ValueError(f"unknown crop protocol {protocol!r}; valid: {CROP_PROTOCOLS}")
        if augment is None:
            augment = AugmentConfig.none()
        elif not isinstance(augment, AugmentConfig):
            known = {f.name for f in fields(AugmentConfig)}
            unknown = set(augment) - known
            if unknown:
                raise ValueError(f"unknown augmentation options {sorted(unknown)}; "
                                 f"valid: {sorted(known)}")
            augment = AugmentConfig(**dict(augment))
        if augment.enabled and augment.flip_prob > 0 and flip_map is None:
            raise ValueError("flip augmentation needs the dataset's flip_map")
        self.out_size = int(out_size)
        self.protocol = protocol
        self.factor = factor
        self.augment = augment
        self.flip_index = None if flip_map is None else np.asarray(flip_map, dtype=np.int64)
        self.photometric = Photometric(augment.photometric) \
            if augment.enabled and augment.photometric else None

    def __call__(self, image: np.ndarray, landmarks: np.ndarray | FaceRecord,
                 rng: np.random.Generator | None = None, *,
                 box: np.ndarray | None = None, center: np.ndarray | None = None,
                 scale: float | None = None, visible: np.ndarray | None = None,
                 source: str = "", params: AugmentParams | None = None) -> dict[str, Any]:
        """Crop (and augment) one face.

        ``landmarks`` is (N, 2) image px or a :class:`FaceRecord`, which then also supplies
        box, centre, scale, visibility and source (explicit keywords win). Returns ``image``
        (S, S, 3) uint8, ``landmarks`` (N, 2) float32 crop px (renamed if flipped),
        ``matrix`` (2, 3) float64 image px -> crop px, ``flipped`` bool, and ``visible`` (N,)
        bool (renamed) when known. ``params`` overrides the geometric draws; the photometric
        list always draws from ``rng``, after the geometry (so one seed fixes both).
        """
        if isinstance(landmarks, FaceRecord):
            record = landmarks
            box = record.box if box is None else box
            center = record.center if center is None else center
            scale = record.scale if scale is None else scale
            visible = record.visible if visible is None else visible
            source = source or record.source
            landmarks = record.landmarks
        landmarks = np.asarray(landmarks, dtype=np.float64)
        cx, cy, side = crop_box(landmarks, self.protocol, box=box, center=center, scale=scale,
                                factor=self.factor, source=source)
        if rng is None and (self.photometric is not None
                            or (params is None and self.augment.enabled)):
            raise ValueError("augmentation is enabled but no rng was given")
        if params is None:
            params = sample_augmentation(rng, self.augment, self.out_size) \
                if self.augment.enabled else AugmentParams()
        matrix = compose(crop_matrix(cx, cy, side, self.out_size), params, self.out_size)

        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] == 1:  # grey -> the 3 channels the network expects
            image = np.repeat(image, 3, axis=2)
        elif image.shape[2] == 4:  # drop alpha
            image = image[:, :, :3]
        crop = warp_image(np.ascontiguousarray(image), matrix, self.out_size)
        if self.photometric is not None:
            crop = self.photometric(crop, rng)

        points = apply_to_landmarks(matrix, landmarks)
        if params.flip:
            if self.flip_index is None:
                raise ValueError("a flipped sample needs the dataset's flip_map")
            points = points[self.flip_index]
            visible = None if visible is None else np.asarray(visible)[self.flip_index]
        out: dict[str, Any] = {"image": crop, "landmarks": points.astype(np.float32),
                               "matrix": matrix, "flipped": params.flip}
        if visible is not None:
            out["visible"] = np.asarray(visible, dtype=bool)
        return out
