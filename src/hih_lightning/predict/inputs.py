"""What hih-predict reads: images, folders, globs and videos, and face boxes from a file."""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hih_lightning.config import ConfigError
from hih_lightning.data.datamodules import ImageDecodeError, read_rgb

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


class InputError(ConfigError):
    """The input or box file cannot be used; the message names it."""


@dataclass
class Item:
    """One image to predict on: a file, or a frame of a video (``frame`` >= 0).

    ``image`` is RGB uint8, or None with ``error`` saying why the file could not be read.
    """

    name: str
    frame: int = -1
    image: np.ndarray | None = None
    error: str | None = None


def expand_input(spec: str | Path) -> list[Path]:
    """Files named by an image or video path, a folder (its files, sorted) or a glob."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(f"input={spec}: the folder has no files")
        return files
    if path.is_file():
        return [path]
    if glob.has_magic(str(spec)):
        files = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"input={spec}: the pattern matches no file")
        return files
    raise InputError(f"input={spec}: no such image, video, folder or pattern")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def video_frame_count(path: Path) -> int:
    """Frames the container says it holds (0 if it does not say)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        capture.release()


def video_fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        return float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
    finally:
        capture.release()


def read_items(paths: list[Path], video_stride: int = 1) -> Iterator[Item]:
    """Every image, and every ``video_stride``-th frame of every video, in order; a file that
    cannot be read becomes an Item with its error (the run goes on)."""
    for path in paths:
        if not is_video(path):
            try:
                yield Item(str(path), image=read_rgb(path))
            except ImageDecodeError as err:
                yield Item(str(path), error=str(err))
            continue
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            yield Item(str(path), error=f"{path}: not a video OpenCV can open")
            continue
        frame = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                if frame % video_stride == 0:
                    yield Item(str(path), frame=frame, image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                frame += 1
        finally:
            capture.release()
        if frame == 0:
            yield Item(str(path), error=f"{path}: no frame could be decoded")


class BoxFile:
    """Face boxes per image from JSON or CSV, x1, y1, x2, y2 in image pixels.

    JSON: ``{"<image>": [[x1, y1, x2, y2], ...], ...}`` or a list of ``{"image": ..., "box":
    [...]}`` / ``{"image": ..., "boxes": [[...], ...]}``. CSV: a header with ``image, x1, y1,
    x2, y2`` (and optionally ``frame``), one row per face. ``<image>`` is matched against the
    path as given, then relative to ``root``, then the file name; a video's boxes apply to
    every frame unless given per ``frame``.
    """

    def __init__(self, path: str | Path, root: str | Path | None = None) -> None:
        self.path, self.root = Path(path), Path(root) if root is not None else None
        if not self.path.is_file():
            raise InputError(f"boxes={path}: no such file")
        self.boxes: dict[tuple[str, int], list[list[float]]] = {}
        if self.path.suffix.lower() == ".csv":
            self._read_csv()
        else:
            self._read_json()

    def _add(self, image: object, frame: object, box: object, where: str) -> None:
        values = np.asarray(box, dtype=np.float64).ravel() if isinstance(box, list) else None
        if values is None or values.shape != (4,) or not np.isfinite(values).all():
            raise InputError(f"{self.path}{where}: a box is [x1, y1, x2, y2], got {box!r}")
        if values[2] <= values[0] or values[3] <= values[1]:
            raise InputError(f"{self.path}{where}: box {values.tolist()} has x2 <= x1 or y2 <= y1")
        key = (str(image), -1 if frame in (None, "") else int(frame))
        self.boxes.setdefault(key, []).append(values.tolist())

    def _read_json(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{self.path}: invalid JSON ({err.msg}, line {err.lineno})") from None
        if isinstance(data, dict):
            for image, boxes in data.items():
                if not isinstance(boxes, list):
                    raise InputError(f"{self.path}[{image!r}]: expected a list of boxes")
                for j, box in enumerate(boxes):
                    self._add(image, None, box, f"[{image!r}][{j}]")
        elif isinstance(data, list):
            for i, entry in enumerate(data):
                if not isinstance(entry, dict) or "image" not in entry:
                    raise InputError(f"{self.path}[{i}]: expected an object with 'image'")
                boxes = entry.get("boxes", [entry.get("box")])
                for j, box in enumerate(boxes):
                    self._add(entry["image"], entry.get("frame"), box, f"[{i}].boxes[{j}]")
        else:
            raise InputError(f"{self.path}: expected a JSON object or list")

    def _read_csv(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"image", "x1", "y1", "x2", "y2"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{self.path}: CSV header lacks {sorted(missing)}")
            for line, row in enumerate(reader, start=2):
                try:
                    box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
                except ValueError:
                    raise InputError(f"{self.path}:{line}: box values must be numbers") from None
                self._add(row["image"], row.get("frame"), box, f":{line}")

    def lookup(self, name: str, frame: int = -1) -> np.ndarray:
        """Boxes (K, 4) for an image (or a video frame); (0, 4) when the file lists none."""
        path = Path(name)
        keys = [name]
        if self.root is not None:
            try:
                keys.append(str(path.relative_to(self.root)))
            except ValueError:
                pass
        keys.append(path.name)
        for key in keys:
            for wanted in ((key, frame), (key, -1)):
                if wanted in self.boxes:
                    return np.asarray(self.boxes[wanted], dtype=np.float64)
        return np.zeros((0, 4))
