"""300-W annotations: iBUG ``.pts`` files, the iBUG folder layout and HRNet's CSVs.

Convention: iBUG ``.pts`` values are 1-based (MATLAB: the centre of the top-left pixel is
(1, 1)). Every reader here subtracts 1 exactly once, so records are 0-based. This matches
SPIGA's 300W ``test.json`` (= ``.pts`` - 1 on every point of every face).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..metainfo import W300
from ..records import FaceRecord
from ._common import parse_floats, resolve_image, where
from .errors import AnnotationError

IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")

# split -> list of (folder relative to root, attribute flags in W300.subsets order)
_COMMON = np.array([1, 0], dtype=np.int64)
_CHALLENGING = np.array([0, 1], dtype=np.int64)
_NONE = np.array([0, 0], dtype=np.int64)
SPLITS: dict[str, tuple[tuple[str, np.ndarray], ...]] = {
    "train": (("afw", _NONE), ("helen/trainset", _NONE), ("lfpw/trainset", _NONE)),
    "common": (("helen/testset", _COMMON), ("lfpw/testset", _COMMON)),
    "challenging": (("ibug", _CHALLENGING),),
    "full": (("helen/testset", _COMMON), ("lfpw/testset", _COMMON), ("ibug", _CHALLENGING)),
    "private": (("01_Indoor", _NONE), ("02_Outdoor", _NONE)),
}


def read_pts(path: Path | str, num_points: int | None = None) -> np.ndarray:
    """Read an iBUG ``.pts`` file as an (N, 2) float64 array, 0-based (file value - 1).

    Layout: ``version: 1``, ``n_points: N``, ``{``, N lines ``x y``, ``}``. ``num_points``
    additionally requires N to be that value (68 for 300-W).
    """
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        lines = [line.strip() for line in fh]
    while lines and not lines[-1]:
        lines.pop()

    def expect_key(index: int, key: str) -> str:
        loc = where(path, index + 1)
        if index >= len(lines):
            raise AnnotationError(f"{loc}: file ends before '{key}:' header")
        head, sep, value = lines[index].partition(":")
        if not sep or head.strip() != key:
            raise AnnotationError(f"{loc}: expected '{key}: ...', got {lines[index]!r}")
        return value.strip()

    version = expect_key(0, "version")
    if version != "1":
        raise AnnotationError(f"{where(path, 1)}: unsupported .pts version {version!r}")
    n_text = expect_key(1, "n_points")
    if not n_text.isdigit():
        raise AnnotationError(f"{where(path, 2)}: n_points is not a positive integer: {n_text!r}")
    n = int(n_text)
    if num_points is not None and n != num_points:
        raise AnnotationError(f"{where(path, 2)}: expected n_points {num_points}, got {n}")
    if len(lines) < 3 or lines[2] != "{":
        raise AnnotationError(f"{where(path, 3)}: expected '{{'")
    points = np.empty((n, 2), dtype=np.float64)
    for i in range(n):
        lineno = 4 + i
        loc = where(path, lineno)
        if lineno > len(lines):
            raise AnnotationError(f"{loc}: file ends after {i} of {n} points")
        fields = lines[lineno - 1].split()
        if fields == ["}"]:
            raise AnnotationError(f"{loc}: '}}' after {i} points, n_points says {n}")
        if len(fields) != 2:
            raise AnnotationError(f"{loc}: expected 2 values 'x y', got {len(fields)}")
        points[i] = parse_floats(fields, loc, "coordinate")
    end = 4 + n
    if end > len(lines) or lines[end - 1] != "}":
        got = lines[end - 1] if end <= len(lines) else "end of file"
        raise AnnotationError(f"{where(path, end)}: expected '}}' after {n} points "
                              f"(n_points {n}), got {got!r}")
    if end < len(lines):
        raise AnnotationError(f"{where(path, end + 1)}: unexpected text after '}}'")
    return points - 1.0


def _image_beside(pts: Path) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        candidate = pts.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def read_300w_folders(root: Path | str, split: str, check_images: bool = True
                      ) -> list[FaceRecord]:
    """Read the iBUG 300-W folder layout for one split.

    Splits: ``train`` = afw + helen/trainset + lfpw/trainset (3,148 faces); ``common`` =
    helen/testset + lfpw/testset (554); ``challenging`` = ibug (135); ``full`` = common +
    challenging (689); ``private`` = 01_Indoor + 02_Outdoor (600; also found under
    ``root/300W``). Each ``.pts`` has its image (.jpg/.png) beside it; with
    ``check_images=False`` a missing image gives ``image_path=None`` instead of an error.
    Attributes are (common, challenging) flags, both 0 for train and private.
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown 300-W split {split!r}; known: {sorted(SPLITS)}")
    records: list[FaceRecord] = []
    for folder, flags in SPLITS[split]:
        directory = root / folder
        if split == "private" and not directory.is_dir() and (root / "300W" / folder).is_dir():
            directory = root / "300W" / folder
        if not directory.is_dir():
            raise FileNotFoundError(f"300-W folder for split {split!r} not found: {directory}")
        pts_files = sorted(directory.glob("*.pts"))
        if not pts_files:
            raise FileNotFoundError(f"no .pts files in {directory}")
        for pts in pts_files:
            image = _image_beside(pts)
            if image is None and check_images:
                raise AnnotationError(f"{where(pts, 1)}: no image "
                                      f"({'/'.join(IMAGE_EXTENSIONS[:2])}) beside it")
            records.append(FaceRecord(image_path=image,
                                      landmarks=read_pts(pts, W300.num_landmarks),
                                      attributes=flags.copy(), source=str(pts)))
    return records


def _300w_flags(image_name: str) -> np.ndarray:
    """(common, challenging) flags from an HRNet 300-W image name's folder."""
    name = image_name.replace("\\", "/")
    if name.startswith("ibug/"):
        return _CHALLENGING.copy()
    if name.startswith(("helen/testset/", "lfpw/testset/")):
        return _COMMON.copy()
    return _NONE.copy()


def read_center_scale_csv(path: Path | str, image_root: Path | str | None = None,
                          one_based: bool = True, check_images: bool = False
                          ) -> list[FaceRecord]:
    """Read an HRNet-style CSV: ``image_name,scale,center_w,center_h,x0,y0,...``.

    N is taken from the header (any even number of coordinate columns). ``scale`` = box side
    / 200. With ``one_based=True`` (the 300-W CSVs: raw ``.pts`` values) both the landmarks
    and the centre (the rounded centre of the landmarks' box, in the same convention) get -1;
    use ``one_based=False`` for CSVs derived from 0-based data such as WFLW. For 68-point files
    the attributes are the 300-W (common, challenging) flags from the image folder
    (helen|lfpw/testset -> common, ibug -> challenging); otherwise attributes are empty.
    """
    path = Path(path)
    shift = 1.0 if one_based else 0.0
    records: list[FaceRecord] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise AnnotationError(f"{where(path, 1)}: empty file, expected a header")
        head = [h.strip() for h in header[:4]]
        if head != ["image_name", "scale", "center_w", "center_h"]:
            raise AnnotationError(f"{where(path, 1)}: header must start with "
                                  f"image_name,scale,center_w,center_h, got {header[:4]}")
        n_coords = len(header) - 4
        if n_coords <= 0 or n_coords % 2:
            raise AnnotationError(f"{where(path, 1)}: expected an even, positive number of "
                                  f"coordinate columns after the 4 leading ones, got {n_coords}")
        num_points = n_coords // 2
        for row in reader:
            loc = where(path, reader.line_num)
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise AnnotationError(f"{loc}: expected {len(header)} columns, got {len(row)}")
            values = parse_floats(row[1:], loc, "column", labels=header[1:])
            scale = float(values[0])
            if scale <= 0:
                raise AnnotationError(f"{loc}: scale must be positive, got {scale}")
            name = row[0].strip()
            attributes = (_300w_flags(name) if num_points == W300.num_landmarks
                          else np.zeros(0, dtype=np.int64))
            records.append(FaceRecord(
                image_path=resolve_image(name, image_root, loc, check_images),
                landmarks=values[3:].reshape(num_points, 2) - shift,
                center=values[1:3] - shift, scale=scale, attributes=attributes, source=loc))
    return records
