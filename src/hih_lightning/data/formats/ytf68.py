"""The YouTube Faces 68-point set as distributed (Udacity's "facial keypoints" data).

Layout under the set's root: ``training/`` and ``test/`` (frames; every file is a PNG,
RGBA, despite its ``.jpg`` name) and ``training_frames_keypoints.csv`` /
``test_frames_keypoints.csv``: a header ``,0,1,...,135``, then one row per frame,
``<file name>,x0,y0,...,x67,y67`` in 0-based pixels of that file (iBUG 300-W point order).
No conversion is applied: the values are already 0-based. Every value is a whole number
(the points look like a landmark model's output), so treat them as noisy labels.

A frame's name is ``<identity>_<NN>.jpg``; the identity (the person) is what an honest split
must keep apart, since the distributed train/test split shares all 347 people.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..records import FaceRecord
from ._common import parse_floats, resolve_image, where
from .errors import AnnotationError

NUM_POINTS = 68
_FRAME_NUMBER = re.compile(r"_\d+$")


def identity_of(name: str) -> str:
    """The person a frame shows: its file name without the extension and trailing ``_NN``."""
    return _FRAME_NUMBER.sub("", Path(name).stem)


def read_ytf68_csv(path: Path | str, image_root: Path | str | None = None,
                   check_images: bool = False) -> list[FaceRecord]:
    """Read one keypoints CSV; image names resolve against ``image_root`` (the frame folder).

    A row that is short, long or not numeric raises :class:`AnnotationError` naming the file
    and its 1-based line.
    """
    path = Path(path)
    records: list[FaceRecord] = []
    with open(path, encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            raise AnnotationError(f"{where(path, 1)}: empty file (expected a header ',0,1,...')")
        if len(header) != 1 + 2 * NUM_POINTS:
            raise AnnotationError(f"{where(path, 1)}: header has {len(header)} columns, expected "
                                  f"{1 + 2 * NUM_POINTS} (image name + x0,y0..x67,y67)")
        # a file without its header would otherwise lose its first face without a word
        if [cell.strip() for cell in header[1:]] != [str(i) for i in range(2 * NUM_POINTS)]:
            raise AnnotationError(f"{where(path, 1)}: header is not ',0,1,...,"
                                  f"{2 * NUM_POINTS - 1}' (got {','.join(header[:4])},...)")
        for lineno, row in enumerate(rows, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            loc = where(path, lineno)
            if len(row) != 1 + 2 * NUM_POINTS:
                raise AnnotationError(f"{loc}: {len(row)} columns, expected {1 + 2 * NUM_POINTS} "
                                      "(image name + x0,y0..x67,y67)")
            values = parse_floats(row[1:], loc, "column", labels=header[1:])
            image = resolve_image(row[0].strip(), image_root, loc, check_images)
            records.append(FaceRecord(image, values.reshape(NUM_POINTS, 2), source=loc))
    return records
