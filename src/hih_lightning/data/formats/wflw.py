"""WFLW official text lists (Wu et al., CVPR'18).

Two layouts exist, one face per line, space separated:

* ``list_98pt_rect_attr_{train,test}.txt`` (207 fields):
  ``x0 y0 ... x97 y97  x_min y_min x_max y_max  pose expression illumination make-up
  occlusion blur  image_name``.
* ``list_98pt_test[_<subset>].txt`` (197 fields): ``x0 y0 ... x97 y97 image_name``.

Coordinates are used as they are (no shift): WFLW ships 0-based sub-pixel values, and mmpose,
HRNet and SPIGA all read them unchanged (checked against mmpose's ``test_wflw.json``). Attributes
are stored in ``metainfo.WFLW_SUBSETS`` order (pose, expression, illumination, makeup,
occlusion, blur).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metainfo import WFLW_SUBSETS
from ..records import FaceRecord
from ._common import numbered_lines, parse_flags, parse_floats, resolve_image, where
from .errors import AnnotationError

NUM_POINTS = 98
FIELDS_RECT_ATTR = 2 * NUM_POINTS + 4 + 6 + 1  # 207
FIELDS_POINTS_ONLY = 2 * NUM_POINTS + 1  # 197

# Official subset file stem suffix -> attribute index (WFLW_SUBSETS order).
SUBSET_FILES: dict[str, int] = {
    "largepose": 0, "expression": 1, "illumination": 2, "makeup": 3, "occlusion": 4, "blur": 5,
}


def _subset_flags_from_name(path: Path) -> np.ndarray:
    """Attribute flags implied by an official ``list_98pt_test_<subset>.txt`` file name.

    The official README says every face in subset file *k* has attribute *k* = 1; other
    attributes are unknown and left 0.
    """
    flags = np.zeros(len(WFLW_SUBSETS), dtype=np.int64)
    stem = path.stem
    prefix = "list_98pt_test_"
    if stem.startswith(prefix) and stem[len(prefix):] in SUBSET_FILES:
        flags[SUBSET_FILES[stem[len(prefix):]]] = 1
    return flags


def read_wflw_list(path: Path | str, image_root: Path | str | None = None,
                   check_images: bool = False) -> list[FaceRecord]:
    """Read a WFLW 207-field (rect + attributes) or 197-field (points only) list.

    The layout is chosen from the first line's field count and every later line must have the
    same count. For 197-field files the rect is unknown (``box=None``) and the attributes are the
    subset flag implied by an official subset file name, otherwise all zeros.
    """
    path = Path(path)
    records: list[FaceRecord] = []
    expected: int | None = None
    name_flags = _subset_flags_from_name(path)
    for lineno, text in numbered_lines(path):
        loc = where(path, lineno)
        fields = text.split()
        if expected is None:
            if len(fields) not in (FIELDS_RECT_ATTR, FIELDS_POINTS_ONLY):
                raise AnnotationError(
                    f"{loc}: expected {FIELDS_RECT_ATTR} fields (points, rect, attributes, name) "
                    f"or {FIELDS_POINTS_ONLY} (points, name), got {len(fields)}")
            expected = len(fields)
        elif len(fields) != expected:
            raise AnnotationError(f"{loc}: expected {expected} fields, got {len(fields)}")
        coords = parse_floats(fields[:2 * NUM_POINTS], loc, "coordinate")
        box = None
        if expected == FIELDS_RECT_ATTR:
            box = parse_floats(fields[2 * NUM_POINTS:2 * NUM_POINTS + 4], loc, "rect value")
            attributes = parse_flags(fields[2 * NUM_POINTS + 4:2 * NUM_POINTS + 10], loc,
                                     "attribute")
        else:
            attributes = name_flags.copy()
        image_path = resolve_image(fields[-1], image_root, loc, check_images)
        records.append(FaceRecord(image_path=image_path, landmarks=coords.reshape(NUM_POINTS, 2),
                                  box=box, attributes=attributes, source=loc))
    return records


def read_wflw_subset_union(directory: Path | str, image_root: Path | str | None = None,
                           check_images: bool = False) -> list[FaceRecord]:
    """Merge the six official subset lists into unique faces with all six flags rebuilt.

    A face is keyed by image name + its 196 coordinates; its attribute *k* is 1 exactly when
    it appears in subset file *k* (official README rule). Faces keep the order of first
    appearance (largepose, expression, illumination, makeup, occlusion, blur files) and the
    ``source`` of that first appearance. On the official files: 1,966 faces in 1,666 images.
    """
    directory = Path(directory)
    merged: dict[tuple[str, bytes], FaceRecord] = {}
    for subset, index in SUBSET_FILES.items():
        path = directory / f"list_98pt_test_{subset}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"WFLW subset list not found: {path}")
        for rec in read_wflw_list(path, image_root=image_root, check_images=check_images):
            if rec.box is not None:
                raise AnnotationError(f"{rec.source}: subset lists have 197 fields, got 207")
            key = (Path(rec.image_path or "").as_posix(), rec.landmarks.tobytes())
            kept = merged.setdefault(key, rec)
            kept.attributes[index] = 1
    return list(merged.values())
