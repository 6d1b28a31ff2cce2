"""OpenCV's Haar frontal-face cascade, evaluated in numpy (the default face detector).

Why not ``cv2.CascadeClassifier``: OpenCV 5 dropped it and the cascade files from its wheels
(they moved to opencv_contrib), and pinning OpenCV 4 would change ``cv2.warpAffine``'s
rounding and so every crop this project makes. The cascade *files* are still OpenCV's: found
in an OpenCV 4 wheel (``cv2.data.haarcascades``) or in Debian's ``opencv-data`` package
(``/usr/share/opencv4/haarcascades``); nothing is downloaded at run time. One evaluator for
every OpenCV version also gives the same boxes everywhere.

The evaluation follows Viola-Jones as OpenCV trains it: per scale, every ``window`` sized
position of a resized grey image (step 2 px below 2x, else 1); features are weighted rectangle
sums divided by the window's ``area * std`` (over the window less a 1 px border); each stage
sums its stumps' leaf values and rejects windows below its threshold. Each stage is evaluated
for all surviving windows at once. Overlapping hits are merged like ``groupRectangles``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hih_lightning.config import ConfigError

FRONTAL_FACE = "haarcascade_frontalface_default.xml"
# dense evaluation of a stage is cheaper than gathered reads above this fraction of windows
DENSE_WHILE_ALIVE = 0.25


class CascadeNotFoundError(ConfigError):
    """No cascade file on this machine; the message says where it looked and how to get one."""


def cascade_search_path() -> list[Path]:
    """Folders that may hold OpenCV's cascade files, in the order they are tried."""
    folders = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        folders.append(Path(data.haarcascades))
    folders += [Path("/usr/share/opencv4/haarcascades"), Path("/usr/share/opencv/haarcascades")]
    return folders


def find_cascade(name: str = FRONTAL_FACE) -> Path:
    """The first ``name`` on :func:`cascade_search_path`; an existing path is returned as is."""
    if Path(name).is_file():
        return Path(name)
    for folder in cascade_search_path():
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(f) for f in cascade_search_path())
    raise CascadeNotFoundError(
        f"face detector: {name} not found (looked in {looked}). OpenCV 5 wheels no longer ship "
        "the Haar cascades: install Debian's opencv-data (`apt-get install opencv-data`), give "
        "detector.cascade=<file.xml>, or give face boxes with boxes=<file.json|csv>")


@dataclass
class _Stage:
    threshold: float
    feature: np.ndarray  # (n,) feature index of each stump
    split: np.ndarray    # (n,) stump threshold (in units of the window's area * std)
    left: np.ndarray     # (n,) leaf value when the feature is below the split
    right: np.ndarray    # (n,)


class HaarCascade:
    """A BOOST/HAAR stump cascade from an OpenCV (new-format) XML file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        root = ET.parse(self.path).getroot()
        cascade = root.find("cascade")
        if cascade is None or cascade.findtext("featureType", "").strip() != "HAAR":
            raise ValueError(f"{self.path}: not an OpenCV HAAR cascade in the new XML format")
        self.width = int(cascade.findtext("width"))
        self.height = int(cascade.findtext("height"))
        self.stages = [self._read_stage(node) for node in cascade.find("stages")]
        rects = np.zeros((len(cascade.find("features")), 3, 4), dtype=np.int64)
        weights = np.zeros((len(cascade.find("features")), 3), dtype=np.float64)
        for i, feature in enumerate(cascade.find("features")):
            if feature.findtext("tilted", "0").strip() == "1":
                raise ValueError(f"{self.path}: tilted Haar features are not supported")
            for j, rect in enumerate(feature.find("rects")):
                x, y, w, h, weight = rect.text.split()
                rects[i, j] = (int(x), int(y), int(w), int(h))
                weights[i, j] = float(weight)
        self.rects, self.weights = rects, weights

    def _read_stage(self, node: ET.Element) -> _Stage:
        stumps = []
        for weak in node.find("weakClassifiers"):
            nodes = weak.findtext("internalNodes").split()
            if len(nodes) != 4:
                raise ValueError(f"{self.path}: only stump (depth-1) cascades are supported")
            left, right = (float(v) for v in weak.findtext("leafValues").split())
            stumps.append((int(nodes[2]), float(nodes[3]), left, right))
        feature, split, left, right = (np.array(col) for col in zip(*stumps, strict=True))
        return _Stage(float(node.findtext("stageThreshold")), feature.astype(np.int64),
                      split, left, right)

    def _terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each feature as 12 integral-image reads: (F, 12) row, column and coefficient.

        A rectangle sum is ii[y+h, x+w] - ii[y, x+w] - ii[y+h, x] + ii[y, x]."""
        x, y, w, h = (v[..., None] for v in np.moveaxis(self.rects, -1, 0))  # (F, 3, 1)
        rows = np.concatenate([y + h, y, y + h, y], axis=-1)
        cols = np.concatenate([x + w, x + w, x, x], axis=-1)
        coef = self.weights[..., None] * np.array([1.0, -1.0, -1.0, 1.0])
        return rows.reshape(-1, 12), cols.reshape(-1, 12), coef.reshape(-1, 12)

    def windows(self, grey: np.ndarray, step: int) -> np.ndarray:
        """Top-left (x, y) of every window of ``grey`` that passes all stages, (K, 2).

        While most windows are alive a stage reads strided views of the integral image; the
        later stages gather reads at the surviving windows only.
        """
        rows, cols = grey.shape
        if rows < self.height or cols < self.width:
            return np.zeros((0, 2), dtype=np.int64)
        total, squares = cv2.integral2(grey, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
        ny, nx = (rows - self.height) // step + 1, (cols - self.width) // step + 1

        def grid(image: np.ndarray, row: int, col: int) -> np.ndarray:
            return image[row:row + step * ny:step, col:col + step * nx:step]

        def box(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            return (grid(image, y1, x1) - grid(image, y0, x1) - grid(image, y1, x0)
                    + grid(image, y0, x0))

        # variance normalisation over the window less a 1 px border (as OpenCV trains it)
        w, h = self.width, self.height
        area = (w - 2) * (h - 2)
        s, sq = box(total, 1, 1, w - 1, h - 1), box(squares, 1, 1, w - 1, h - 1)
        norm = area * sq - s * s
        norm = np.where(norm > 0, np.sqrt(np.maximum(norm, 0)), 1.0)
        term_rows, term_cols, coef = self._terms()
        alive = np.ones((ny, nx), dtype=bool)
        stages = iter(self.stages)
        for stage in stages:  # dense while most windows are alive
            score = np.zeros((ny, nx))
            for f, split, left, right in zip(stage.feature, stage.split, stage.left,
                                             stage.right, strict=True):
                value = sum(c * grid(total, r, q) for r, q, c in
                            zip(term_rows[f], term_cols[f], coef[f], strict=True))
                score += np.where(value < split * norm, left, right)
            alive &= score >= stage.threshold
            if alive.mean() < DENSE_WHILE_ALIVE:
                break
        stride = cols + 1
        iy, ix = np.nonzero(alive)
        origin = iy * step * stride + ix * step
        norm = norm[iy, ix]
        offsets = term_rows * stride + term_cols
        for stage in stages:  # the others at the survivors only
            if origin.size == 0:
                break
            reads = total.ravel()[origin[:, None, None] + offsets[stage.feature]]  # (K, n, 12)
            value = (reads * coef[stage.feature]).sum(-1)
            score = np.where(value < stage.split * norm[:, None], stage.left, stage.right)
            keep = score.sum(-1) >= stage.threshold
            origin, norm = origin[keep], norm[keep]
        return np.stack([origin % stride, origin // stride], axis=-1)


def group_boxes(boxes: np.ndarray, min_neighbors: int, eps: float = 0.2) -> np.ndarray:
    """Merge overlapping (K, 4) x, y, w, h hits: clusters of similar boxes (OpenCV's
    ``groupRectangles`` rule), averaged; clusters of ``min_neighbors`` or fewer boxes are
    dropped, and so is a box lying inside a bigger cluster's box with more support."""
    n = len(boxes)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = boxes[i], boxes[j]
            delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) / 2
            if (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta
                    and abs(a[0] + a[2] - b[0] - b[2]) <= delta
                    and abs(a[1] + a[3] - b[1] - b[3]) <= delta):
                parent[root(i)] = root(j)
    labels = np.array([root(i) for i in range(n)], dtype=np.int64)
    merged, support = [], []
    for label in np.unique(labels):
        members = boxes[labels == label]
        if len(members) > min_neighbors:
            merged.append(members.mean(axis=0))
            support.append(len(members))
    keep = []
    for i, (x, y, w, h) in enumerate(merged):
        inside = False
        for j, (x2, y2, w2, h2) in enumerate(merged):
            dx, dy = 0.2 * w2, 0.2 * h2
            if (i != j and support[j] >= max(3, support[i]) and x >= x2 - dx and y >= y2 - dy
                    and x + w <= x2 + w2 + dx and y + h <= y2 + h2 + dy):
                inside = True
                break
        if not inside:
            keep.append((x, y, w, h))
    return np.array(keep, dtype=np.float64).reshape(-1, 4)


class FaceDetector:
    """Frontal faces in an RGB image, as (K, 4) x1, y1, x2, y2 boxes in image px, largest first.

    Detection runs on a grey, histogram-equalised copy whose longer side is at most
    ``max_side`` px (faster; faces under ``min_size`` px there are not searched for).
    """

    def __init__(self, cascade: str | Path = FRONTAL_FACE, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 30, max_side: int = 640) -> None:
        if scale_factor <= 1.0:
            raise ValueError(f"detector scale_factor must be > 1, got {scale_factor}")
        self.cascade = HaarCascade(find_cascade(str(cascade)))
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.min_size, self.max_side = int(min_size), int(max_side)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
        shrink = min(1.0, self.max_side / max(grey.shape))
        if shrink < 1.0:
            grey = cv2.resize(grey, (round(grey.shape[1] * shrink), round(grey.shape[0] * shrink)),
                              interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        size = self.cascade.width
        hits = []
        scale = 1.0
        while min(grey.shape) / scale >= size:
            if size * scale >= self.min_size:
                small = grey if scale == 1.0 else cv2.resize(
                    grey, (round(grey.shape[1] / scale), round(grey.shape[0] / scale)),
                    interpolation=cv2.INTER_LINEAR)
                found = self.cascade.windows(small, step=2 if scale < 2 else 1)
                hits += [(x * scale, y * scale, size * scale, size * scale) for x, y in found]
            scale *= self.scale_factor
        boxes = group_boxes(np.array(hits, dtype=np.float64).reshape(-1, 4), self.min_neighbors)
        boxes[:, 2:] += boxes[:, :2]
        boxes /= shrink
        return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]), kind="stable")]
