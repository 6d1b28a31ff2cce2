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


def input_root(spec: str | Path) -> Path | None:
    """The folder box-file keys may be relative to: a folder input itself, or a glob's
    leading folders (``photos`` for ``photos/**/*.jpg``); None for a single file."""
    path = Path(spec)
    if path.is_dir():
        return path
    if path.is_file() or not glob.has_magic(str(spec)):
        return None
    lead = path.parts[:next(i for i, part in enumerate(path.parts) if glob.has_magic(part))]
    return Path(*lead) if lead else Path(".")


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
    x2, y2`` (and optionally ``frame``), one row per face. A video's boxes apply to every
    frame unless given per ``frame`` (a whole number; ``3.0`` is frame 3, as pandas writes it).

    Each input file takes the boxes keyed by its path as given, else by its path relative to
    ``root`` (a folder input, or a glob's leading folders), else by its file name alone; a
    file name that would hand one key's boxes to several inputs is refused, and so is a
    file none of whose keys names an input (both would otherwise pass silently as no_face).
    """

    def __init__(self, path: str | Path, inputs: list[Path],
                 root: str | Path | None = None) -> None:
        self.path, self.root = Path(path), Path(root) if root is not None else None
        if not self.path.is_file():
            raise InputError(f"boxes={path}: no such file")
        self.boxes: dict[tuple[str, int], list[list[float]]] = {}
        self.where: dict[str, str] = {}  # image key -> where the file first names it
        if self.path.suffix.lower() == ".csv":
            self._read_csv()
        else:
            self._read_json()
        self.key_of = self._match(inputs)

    def _add(self, image: object, frame: object, box: object, where: str) -> None:
        values = np.asarray(box, dtype=np.float64).ravel() if isinstance(box, list) else None
        if values is None or values.shape != (4,) or not np.isfinite(values).all():
            raise InputError(f"{self.path}{where}: a box is [x1, y1, x2, y2], got {box!r}")
        if values[2] <= values[0] or values[3] <= values[1]:
            raise InputError(f"{self.path}{where}: box {values.tolist()} has x2 <= x1 or y2 <= y1")
        key = str(Path(str(image)))
        self.where.setdefault(key, where)
        self.boxes.setdefault((key, self._frame(frame, where)), []).append(values.tolist())

    def _frame(self, value: object, where: str) -> int:
        """-1 (every frame) for no value, else a whole number >= 0."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return -1
        try:
            number = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if not number.is_integer() or number < 0:
            raise InputError(f"{self.path}{where}: frame must be a whole number >= 0, "
                             f"got {value!r}")
        return int(number)

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
                if not isinstance(boxes, list):
                    raise InputError(f"{self.path}[{i}].boxes: expected a list of boxes")
                for j, box in enumerate(boxes):
                    self._add(entry["image"], entry.get("frame"), box, f"[{i}].boxes[{j}]")
        else:
            raise InputError(f"{self.path}: expected a JSON object or list")

    def _read_csv(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            missing = {"image", "x1", "y1", "x2", "y2"} - set(header)
            if missing:
                raise InputError(f"{self.path}:1: CSV header lacks {sorted(missing)}")
            for cells in reader:
                where = f":{reader.line_num}"
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise InputError(f"{self.path}{where}: {len(cells)} values, the header has "
                                     f"{len(header)} ({','.join(header)})")
                row = dict(zip(header, cells, strict=True))
                try:
                    box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
                except ValueError:
                    raise InputError(f"{self.path}{where}: box values must be numbers") from None
                self._add(row["image"], row.get("frame"), box, where)

    def _match(self, inputs: list[Path]) -> dict[str, str]:
        """Input path -> the image key whose boxes it takes (see the class docstring)."""
        images = {key for key, _ in self.boxes}
        key_of: dict[str, str] = {}
        by_file_name: dict[str, list[str]] = {}
        for path in inputs:
            specific = [str(path)]
            if self.root is not None and path.is_relative_to(self.root):
                specific.append(str(path.relative_to(self.root)))
            key = next((k for k in specific if k in images), None)
            if key is None and path.name in images:
                key = path.name
                by_file_name.setdefault(key, []).append(str(path))
            if key is not None:
                key_of[str(path)] = key
        for key, paths in by_file_name.items():
            if len(paths) > 1:
                relative = f" relative to {self.root}" if self.root is not None else ""
                raise InputError(f"{self.path}{self.where[key]}: {key!r} names {len(paths)} "
                                 f"inputs ({', '.join(paths[:3])}); key each by its "
                                 f"path{relative}")
        if images and not key_of:
            example = sorted(images)[0]
            relative = f", relative to {self.root}" if self.root is not None else ""
            raise InputError(f"{self.path}: none of its {len(images)} images is an input (e.g. "
                             f"{example!r}); keys are matched by the path as given{relative}, "
                             "or by file name")
        return key_of

    def lookup(self, name: str, frame: int = -1) -> np.ndarray:
        """Boxes (K, 4) for an input (or a video frame); (0, 4) when the file lists none."""
        key = self.key_of.get(name)
        for wanted in ((key, frame), (key, -1)):
            if wanted in self.boxes:
                return np.asarray(self.boxes[wanted], dtype=np.float64)
        return np.zeros((0, 4))
