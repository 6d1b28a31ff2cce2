"""The one exception every annotation reader raises for malformed input.

It lives in :mod:`hih_lightning.errors` with the project's other user errors; this module
keeps the old import path working.
"""

from __future__ import annotations

from hih_lightning.errors import AnnotationError

__all__ = ["AnnotationError"]
