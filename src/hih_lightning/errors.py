"""The mistakes a user can make, in one module that imports nothing of the project.

Every entry point reports these as one line naming the key or file, exit status 2, no
traceback (:func:`hih_lightning.run_folder.user_errors`). They live here, not beside the code
that raises them, so that any module can raise or catch them without importing another: the
data modules, ``prepare`` and ``run_folder`` used to import each other in a circle to reach
``DataPathError``. The old homes (``config``, ``data.benchmarks``, ``data.datamodules``,
``data.formats.errors``) re-export the same classes. Each keeps the built-in base it always
had, so an existing ``except ValueError`` / ``except OSError`` still catches it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


class DataPathError(FileNotFoundError):
    """A benchmark file or folder is not where the official layout puts it."""


class AnnotationError(ValueError):
    """Malformed annotation file.

    The message always starts with ``<file>:<where>:`` where ``<where>`` is the 1-based line
    number for text formats, or the key / record index for JSON and ``.mat`` files, so a bad
    file can be fixed without a debugger.
    """


class ImageDecodeError(OSError):
    """An image file is missing, unreadable or corrupt; the message names it."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or not a checkpoint; the message names it."""


# what the command-line tools report as one line with exit status 2 (plus Hydra's own errors)
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataPathError, AnnotationError,
                                            ImageDecodeError, CheckpointError)

__all__ = ["USER_ERRORS", "AnnotationError", "CheckpointError", "ConfigError", "DataPathError",
           "ImageDecodeError"]
