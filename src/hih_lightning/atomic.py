"""Files that a kill never leaves half-written: a checkpoint, a run's saved config.

The new content goes to a temporary file beside the target, is synced to disk, and is then
renamed over the target; a rename within one folder is atomic, so a kill at any moment leaves
either the old file or the new one. A kill before the rename leaves the temporary file, which
the next write of the same target removes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it takes the name ``path`` only
    once the block has finished without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with staged.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a power loss keeps the new name)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform or file system without folder handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
