"""The one exception every annotation reader raises for malformed input."""

from __future__ import annotations


class AnnotationError(ValueError):
    """Malformed annotation file.

    The message always starts with ``<file>:<where>:`` where ``<where>`` is the 1-based line
    number for text formats, or the key / record index for JSON and ``.mat`` files, so a bad
    file can be fixed without a debugger.
    """
