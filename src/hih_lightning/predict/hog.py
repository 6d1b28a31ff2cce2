"""dlib's HOG frontal-face detector, hih-predict's default: its weights are built into the
``dlib-bin`` wheel (a dependency), so it needs no system package and no download.

It finds faces down to about 40 px with one upsampling, which the YouTube Faces frames
(faces of 60-250 px) need; why it and not OpenCV's Haar cascade: experiments/face_detectors.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def import_dlib() -> Any:
    """dlib, or an ImportError that says how to install it."""
    try:
        import dlib
    except ImportError:
        raise ImportError("dlib is not installed: pip install dlib-bin "
                          "(a dependency of hih-lightning)") from None
    return dlib


class HOGFaceDetector:
    """Frontal faces in an RGB image, as (K, 4) x1, y1, x2, y2 boxes in image px, largest first.

    Detection runs on a copy whose longer side is at most ``max_side`` px, upsampled
    ``upsample`` times inside dlib (each doubles the time and halves the smallest face found).
    """

    def __init__(self, upsample: int = 1, max_side: int = 640) -> None:
        if upsample < 0 or max_side < 64:
            raise ValueError(f"hog detector: need upsample >= 0 and max_side >= 64, got "
                             f"upsample={upsample}, max_side={max_side}")
        self.detector = import_dlib().get_frontal_face_detector()
        self.upsample, self.max_side = int(upsample), int(max_side)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = np.ascontiguousarray(image[:, :, :3])
        shrink = min(1.0, self.max_side / max(image.shape[:2]))
        if shrink < 1.0:
            image = cv2.resize(image, (round(image.shape[1] * shrink),
                                       round(image.shape[0] * shrink)),
                               interpolation=cv2.INTER_AREA)
        found = self.detector(image, self.upsample)
        # dlib's rectangles are inclusive pixel indices; in the pixel-centre convention the
        # box spans [left - 0.5, right + 0.5], and shrinking maps v to (v + 0.5) * s - 0.5
        boxes = np.array([[r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5]
                          for r in found], dtype=np.float64).reshape(-1, 4)
        boxes = (boxes + 0.5) / shrink - 0.5
        return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]), kind="stable")]
