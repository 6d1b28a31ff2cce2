"""Small parsing helpers shared by the format readers (not public API)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import AnnotationError


def where(path: Path | str, loc: int | str) -> str:
    """``"<file>:<loc>"``: the prefix of every error message and of ``FaceRecord.source``."""
    return f"{path}:{loc}"


def parse_floats(tokens: Sequence[str], loc: str, what: str = "value",
                 labels: Sequence[str] | None = None) -> np.ndarray:
    """Parse text tokens as finite floats, naming the first bad one and its position.

    ``labels`` (e.g. CSV column names) replaces ``"<what> <index>"`` in messages.
    """
    out = np.empty(len(tokens), dtype=np.float64)
    for i, tok in enumerate(tokens):
        name = f"{what} {labels[i]!r}" if labels is not None else f"{what} {i}"
        try:
            v = float(tok)
        except ValueError:
            raise AnnotationError(f"{loc}: {name} is not a number: {tok!r}") from None
        if not math.isfinite(v):
            raise AnnotationError(f"{loc}: {name} is not finite: {tok!r}")
        out[i] = v
    return out


def as_finite_array(values: object, loc: str, what: str) -> np.ndarray:
    """Convert JSON / .mat values to float64, rejecting non-numbers, NaN and inf."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{loc}: {what} must be numeric, got {values!r:.80}") from None
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.ravel()))[0])
        raise AnnotationError(f"{loc}: {what} value {bad} is not finite ({arr.ravel()[bad]})")
    return arr


def parse_flags(tokens: Sequence[str], loc: str, what: str) -> np.ndarray:
    """Parse 0/1 integer flags (attributes, occlusion), rejecting anything else."""
    out = np.empty(len(tokens), dtype=np.int64)
    for i, tok in enumerate(tokens):
        if tok not in ("0", "1"):
            raise AnnotationError(f"{loc}: {what} {i} must be 0 or 1, got {tok!r}")
        out[i] = int(tok)
    return out


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped text) for every non-blank line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if text:
                yield lineno, text


def resolve_image(name: str, image_root: Path | str | None, loc: str,
                  check_images: bool) -> Path:
    """Join an annotation's image name onto ``image_root``; optionally require the file."""
    if not name:
        raise AnnotationError(f"{loc}: empty image name")
    image_path = Path(image_root) / name if image_root is not None else Path(name)
    if check_images and not image_path.is_file():
        raise AnnotationError(f"{loc}: image not found: {image_path}")
    return image_path
