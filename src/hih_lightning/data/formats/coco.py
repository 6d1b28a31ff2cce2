"""COCO-style keypoint JSON as used by mmpose for face landmarks.

Layout: ``images`` (id, file_name), ``annotations`` (image_id, keypoints ``[x, y, v] * N``,
bbox ``x, y, w, h``, optional ``center`` / ``scale``). Coordinates are taken as 0-based by
default; pass ``one_based=True`` for files holding raw 1-based values, such as mmpose's
``test_300w.json`` (identical to HRNet's CSV, i.e. raw ``.pts`` values): then keypoints, bbox
origin and centre get -1. mmpose's COFW and WFLW files are 0-based already.

Visibility: when any keypoint in the file has ``v = 2``, ``visible = (v == 2)`` (mmpose COFW:
2 = visible, 1 = occluded); files using only ``v = 1`` (mmpose WFLW/300W: "labelled") carry no
occlusion information and give ``visible = None``. ``v = 0`` (unlabelled) is an error, since
every face landmark must have a position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..records import FaceRecord
from ._common import as_finite_array, resolve_image, where
from .errors import AnnotationError


def _num_keypoints(data: dict[str, Any], annotations: list[Any]) -> int | None:
    """N from the category's keypoint names when listed, else from the first annotation."""
    for category in data.get("categories") or []:
        names = category.get("keypoints") if isinstance(category, dict) else None
        if names:
            return len(names)
    first = annotations[0] if annotations else None
    if isinstance(first, dict) and isinstance(first.get("keypoints"), list):
        return len(first["keypoints"]) // 3
    return None


def read_coco_keypoints(path: Path | str, image_root: Path | str | None = None,
                        num_keypoints: int | None = None, one_based: bool = False,
                        check_images: bool = False) -> list[FaceRecord]:
    """Read COCO keypoint annotations, one record per annotation (file order).

    Every annotation must have ``3 * N`` keypoint values, N being ``num_keypoints`` when
    given, else the category's keypoint-name count, else the first annotation's. ``box`` is
    ``(x, y, x + w, y + h)``. Errors name ``annotations[i]`` (0-based) or ``images[i]``.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{where(path, exc.lineno)}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{where(path, '<root>')}: expected an object with 'images' and "
                              f"'annotations', got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{where(path, key)}: missing or not a list")
    file_names: dict[Any, str] = {}
    for i, image in enumerate(data["images"]):
        loc = where(path, f"images[{i}]")
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise AnnotationError(f"{loc}: needs 'id' and 'file_name'")
        if image["id"] in file_names:
            raise AnnotationError(f"{loc}: duplicate image id {image['id']!r}")
        file_names[image["id"]] = str(image["file_name"])

    annotations = data["annotations"]
    n = num_keypoints if num_keypoints is not None else _num_keypoints(data, annotations)
    shift = 1.0 if one_based else 0.0
    flags_seen = [np.asarray([], dtype=np.float64)]
    records: list[FaceRecord] = []
    for i, ann in enumerate(annotations):
        loc = where(path, f"annotations[{i}]")
        if not isinstance(ann, dict):
            raise AnnotationError(f"{loc}: expected an object, got {type(ann).__name__}")
        if ann.get("image_id") not in file_names:
            raise AnnotationError(f"{loc}: image_id {ann.get('image_id')!r} not in 'images'")
        keypoints = ann.get("keypoints")
        if not isinstance(keypoints, list):
            raise AnnotationError(f"{loc}: 'keypoints' missing or not a list")
        if n is None or len(keypoints) != 3 * n:
            raise AnnotationError(f"{loc}: expected {3 * (n or 0)} keypoint values "
                                  f"({n} x [x, y, v]), got {len(keypoints)}")
        kp = as_finite_array(keypoints, loc, "keypoints").reshape(n, 3)
        v = kp[:, 2]
        if not np.isin(v, (1, 2)).all():
            bad = int(np.flatnonzero(~np.isin(v, (1, 2)))[0])
            raise AnnotationError(f"{loc}: keypoint {bad} has v={v[bad]:g}; "
                                  f"expected 1 (labelled/occluded) or 2 (visible)")
        flags_seen.append(v)
        box = None
        if ann.get("bbox") is not None:
            bbox = as_finite_array(ann["bbox"], loc, "bbox")
            if bbox.shape != (4,) or bbox[2] < 0 or bbox[3] < 0:
                raise AnnotationError(f"{loc}: bbox must be [x, y, w, h] with w, h >= 0, "
                                      f"got {ann['bbox']}")
            x, y, w, h = bbox
            box = np.array([x - shift, y - shift, x - shift + w, y - shift + h])
        center = None
        if ann.get("center") is not None:
            center = as_finite_array(ann["center"], loc, "center")
            if center.shape != (2,):
                raise AnnotationError(f"{loc}: center must be [x, y], got {ann['center']}")
            center = center - shift
        scale = None
        if ann.get("scale") is not None:
            scale_arr = as_finite_array(ann["scale"], loc, "scale").ravel()
            if scale_arr.size == 0 or (scale_arr <= 0).any():
                raise AnnotationError(f"{loc}: scale must be positive, got {ann['scale']}")
            scale = float(scale_arr[0])
        records.append(FaceRecord(
            image_path=resolve_image(file_names[ann["image_id"]], image_root, loc, check_images),
            landmarks=kp[:, :2] - shift, box=box, center=center, scale=scale,
            visible=v == 2, source=loc))
    if not (np.concatenate(flags_seen) == 2).any():
        for rec in records:
            rec.visible = None
    return records
