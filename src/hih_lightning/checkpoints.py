"""Reading a checkpoint file, with one line naming it when it is not a readable checkpoint.

Every command that takes ``ckpt_path=`` (``hih-train``, ``hih-eval``, ``hih-predict``,
``hih-export``) reads the file through :func:`load_checkpoint` before anything else does,
Lightning's own load in ``trainer.fit(ckpt_path=...)`` / ``trainer.test`` included: a truncated
copy (a killed transfer, a full disk), a text file or a missing file then ends the command as
:class:`~hih_lightning.errors.CheckpointError` (one line naming the file, exit status 2), not
as a traceback from deep inside ``torch.load``.

``torch.load`` does not check the CRC-32 sums that ``torch.save`` writes into its zip archive,
so a file corrupted in the middle of its tensor data loads without an error; the sums are
checked here first.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hih_lightning.errors import CheckpointError

_ZIP_MAGIC = b"PK\x03\x04"


def load_checkpoint(path: str | Path, weights_only: bool = True,
                    required: Sequence[str] = ()) -> dict[str, Any]:
    """``torch.load(path)`` on the CPU, or :class:`CheckpointError` naming ``path`` and why it
    is not a readable checkpoint: missing, empty, truncated, corrupt (a CRC-32 mismatch), not
    a file ``torch.save`` wrote, not a dict, or without a ``required`` entry.

    ``weights_only=True`` (torch's default, and what Lightning uses for a local file) reads
    tensors and plain containers only.
    """
    path = Path(path)

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a readable checkpoint ({reason})")

    if path.is_dir():
        raise fail("a folder, not a file")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(40)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as err:
        raise fail(err.strerror or str(err)) from None
    if size == 0:
        raise fail("empty file")
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        _check_crc(path, fail)
    elif head.startswith(_ZIP_MAGIC):
        raise fail(f"truncated: {size} bytes of a zip archive as torch.save writes, without "
                   "its end")
    try:
        state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a bad file
        # torch.save writes a zip archive (before torch 1.6 a pickle, still read above); what
        # a foreign file starts with says what it is (a Git LFS pointer, a log, an image)
        refused = str(err).startswith("Weights only load failed")  # read, but not allowed
        raise fail(_one_line(err) if is_zip or refused else f"not a file torch.save wrote; it "
                   f"starts with {head!r}") from None
    if not isinstance(state, dict):
        raise fail(f"holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in required if key not in state]
    if missing:
        found = ", ".join(map(repr, list(state)[:6])) or "nothing"
        raise fail(f"no {missing[0]!r} entry; it holds {found}")
    return state


def _check_crc(path: Path, fail: Any) -> None:
    """Read every member of the archive so that :mod:`zipfile` compares its CRC-32 sum."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size:  # torch.save without CRCs: nothing to check
                    continue
                with archive.open(info) as member:
                    while member.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise fail(f"corrupt: {_one_line(err)}") from None


def _one_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, with its type; for torch's refusal of a
    weights-only load, the line that names the object it refused."""
    message = str(err).strip()
    if message.startswith("Weights only load failed"):
        refused = [line.split("Unsupported global:", 1)[1].split(" was not", 1)[0].strip()
                   for line in message.splitlines() if "Unsupported global:" in line]
        return (f"holds an object torch.load(weights_only=True) refuses: "
                f"{refused[0] if refused else 'see torch.load'}")[:limit]
    text = message.splitlines()[0] if message else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
