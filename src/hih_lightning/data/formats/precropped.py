"""The HIH authors' processed layout: ``<image> x1 y1 ... xN yN`` on square crops.

Coordinates are normalised to [0, 1] by the crop side (PFLD-style preprocessing: landmarks
minus the crop origin, divided by the crop size). The reader converts them to crop pixels as
``x * crop_size`` (256 by default), not ``x * (crop_size - 1)``. Evidence: the authors' training
code treats a normalised value as a fraction of the image size, e.g. a translation of ``c``
pixels shifts targets by ``c / image_width``, padding maps targets with ``t * image_size``,
heatmap targets are ``t * heatmap_size`` and rotations are about ``0.5``. Values may fall
slightly outside [0, 1] (points beyond the crop), so they are not range-checked.
"""

from __future__ import annotations

from pathlib import Path

from ..records import FaceRecord
from ._common import numbered_lines, parse_floats, resolve_image, where
from .errors import AnnotationError


def read_precropped_list(path: Path | str, image_root: Path | str | None = None,
                         crop_size: int = 256, num_points: int | None = None,
                         check_images: bool = False) -> list[FaceRecord]:
    """Read a precropped list; landmarks come back in crop pixels (``value * crop_size``).

    N is ``num_points`` when given, otherwise taken from the first line; every line must
    then have ``1 + 2N`` fields. Image names are resolved against ``image_root``.
    """
    path = Path(path)
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    records: list[FaceRecord] = []
    expected = None if num_points is None else 1 + 2 * num_points
    for lineno, text in numbered_lines(path):
        loc = where(path, lineno)
        fields = text.split()
        if expected is None:
            if len(fields) < 3 or len(fields) % 2 == 0:
                raise AnnotationError(f"{loc}: expected '<image> x1 y1 ... xN yN' (an odd number "
                                      f"of fields, at least 3), got {len(fields)} fields")
            expected = len(fields)
        if len(fields) != expected:
            raise AnnotationError(f"{loc}: expected {expected} fields "
                                  f"(image + {expected - 1} coordinates), got {len(fields)}")
        coords = parse_floats(fields[1:], loc, "coordinate")
        records.append(FaceRecord(
            image_path=resolve_image(fields[0], image_root, loc, check_images),
            landmarks=coords.reshape(-1, 2) * float(crop_size), source=loc))
    return records
