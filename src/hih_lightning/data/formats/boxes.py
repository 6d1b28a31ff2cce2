"""Face boxes shipped apart from the landmarks, one ``x y w h`` row per face in record order.

Example: the COFW-68 benchmark's ``cofw68_test_bboxes.mat`` (``bboxes``, 507 x 4, MATLAB
1-based), whose rows follow the official COFW test order, i.e. ``read_cofw_507_mat`` order.
Returned as ``(x1, y1, x2, y2)`` 0-based, the ``FaceRecord.box`` convention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from ._common import as_finite_array, where
from .errors import AnnotationError


def read_xywh_boxes(path: Path | str, key: str = "bboxes", one_based: bool = True
                    ) -> np.ndarray:
    """(N, 4) float64 ``x1 y1 x2 y2`` from a ``.mat`` (array ``key``) or a text file of
    ``x y w h`` rows; ``one_based`` subtracts 1 from x and y (MATLAB boxes)."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        mat = scipy.io.loadmat(path)
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise AnnotationError(f"{where(path, key)}: missing; found {found}")
        raw: object = mat[key]
        loc = where(path, key)
    else:
        try:
            raw = np.loadtxt(path, ndmin=2, delimiter="," if path.suffix == ".csv" else None)
        except ValueError as err:
            raise AnnotationError(f"{where(path, 1)}: expected rows of 4 numbers x y w h "
                                  f"({err})") from None
        loc = where(path, 1)
    boxes = as_finite_array(raw, loc, "box")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise AnnotationError(f"{loc}: expected (faces, 4) x y w h, got {boxes.shape}")
    if (boxes[:, 2:] <= 0).any():
        bad = int(np.flatnonzero((boxes[:, 2:] <= 0).any(axis=1))[0])
        raise AnnotationError(f"{loc}: box {bad} has a non-positive width or height")
    xy = boxes[:, :2] - (1.0 if one_based else 0.0)
    return np.hstack([xy, xy + boxes[:, 2:]])
