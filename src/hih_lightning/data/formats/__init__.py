"""Readers for the official face-landmark annotation formats.

Every reader returns ``FaceRecord`` objects with 0-based image-pixel landmarks (each module
documents the one conversion it applies) and raises ``AnnotationError`` naming the file and
the 1-based line (or JSON / .mat key) for malformed input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..records import FaceRecord
from .boxes import read_xywh_boxes
from .coco import read_coco_keypoints
from .cofw import read_cofw_507_mat, read_cofw_mat
from .errors import AnnotationError
from .precropped import read_precropped_list
from .w300 import read_300w_folders, read_center_scale_csv, read_pts
from .wflw import read_wflw_list, read_wflw_subset_union
from .ytf68 import identity_of, read_ytf68_csv

READERS: dict[str, Callable[..., Any]] = {
    "wflw": read_wflw_list,
    "wflw_subset_union": read_wflw_subset_union,
    "300w_folders": read_300w_folders,
    "center_scale_csv": read_center_scale_csv,
    "cofw_mat": read_cofw_mat,
    "cofw_507_mat": read_cofw_507_mat,
    "precropped": read_precropped_list,
    "coco": read_coco_keypoints,
    "ytf68_csv": read_ytf68_csv,
}


def read_annotations(fmt: str, path: Path | str, **kw: Any
                     ) -> list[FaceRecord] | tuple[list[FaceRecord], list[np.ndarray]]:
    """Read ``path`` with the reader registered as ``fmt`` (config-driven loading).

    All formats return ``list[FaceRecord]`` except ``cofw_mat``, which returns
    ``(records, images)`` because its images live inside the .mat file.
    """
    try:
        reader = READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown annotation format {fmt!r}; known: {sorted(READERS)}") from None
    return reader(path, **kw)


__all__ = [
    "READERS",
    "AnnotationError",
    "identity_of",
    "read_300w_folders",
    "read_annotations",
    "read_center_scale_csv",
    "read_coco_keypoints",
    "read_cofw_507_mat",
    "read_cofw_mat",
    "read_precropped_list",
    "read_pts",
    "read_wflw_list",
    "read_wflw_subset_union",
    "read_xywh_boxes",
    "read_ytf68_csv",
]
