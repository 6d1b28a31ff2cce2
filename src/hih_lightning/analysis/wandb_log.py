"""Read a W&B run's transaction log (``run-<id>.wandb``) without syncing it.

Offline runs of current wandb releases (0.19+) write no ``files/wandb-summary.json``: the
config, summary and history exist only in the transaction log that ``wandb sync`` uploads.
Reading it lets ``hih-report`` collect a sweep logged to W&B offline, and lets the tests check
what a run would show on the dashboard. The file is LevelDB's log format (32 KiB blocks of
chunks with a 7-byte header: CRC-32, length, type FULL/FIRST/MIDDLE/LAST) after a 7-byte W&B
header; each record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FILE_HEADER = 7  # b":W&B", 2-byte magic, 1-byte version
_BLOCK = 32 * 1024
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class WandbRunLog:
    """What the dashboard would show for one run: identity, config and final summary."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # None until the run's exit record is in the log. wandb's service writes the log and may
    # still be flushing its tail when ``wandb.finish()`` returns: wait for this, not for that.
    exit_code: int | None = None


def _records(path: Path) -> Iterator[bytes]:
    """The serialized records of a transaction log, chunks reassembled."""
    raw = path.read_bytes()
    if raw[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log (no :W&B header)")
    pos, pending = _FILE_HEADER, b""
    while pos + _CHUNK_HEADER.size <= len(raw):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER.size:  # a block's zero-padded trailer
            pos += left
            continue
        _crc, length, kind = _CHUNK_HEADER.unpack_from(raw, pos)
        start = pos + _CHUNK_HEADER.size
        if start + length > len(raw):  # a run still being written: stop at its last record
            return
        chunk, pos = raw[start:start + length], start + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _set_nested(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def read_wandb_run(path: Path) -> WandbRunLog:
    """Fold the run, config and summary records of ``run-<id>.wandb`` in log order.

    Summary entries come out as in ``wandb-summary.json``: a key with a ``define_metric``
    summary holds a dict such as ``{"min": 0.05}``, a logged table or image holds its
    media description (``{"_type": "table-file", ...}``).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    log = WandbRunLog()
    for data in _records(Path(path)):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            log.run_id, log.name = record.run.run_id, record.run.display_name
            log.group, log.job_type = record.run.run_group, record.run.job_type
            log.tags = list(record.run.tags)
        elif kind in ("config", "summary"):
            target = log.config if kind == "config" else log.summary
            updates = record.config.update if kind == "config" else record.summary.update
            for item in updates:
                keys = [item.key] if item.key else list(item.nested_key)
                _set_nested(target, keys, json.loads(item.value_json))
        elif kind == "exit":
            log.exit_code = record.exit.exit_code
    return log


def read_finished_wandb_run(path: Path, timeout: float = 60.0) -> WandbRunLog:
    """:func:`read_wandb_run` once the log holds the exit record (or after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_wandb_run(path)
        if log.exit_code is not None or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def find_run_logs(folder: Path) -> list[Path]:
    """Transaction logs under ``folder`` (``wandb/offline-run-*/run-*.wandb``), oldest first."""
    return sorted(Path(folder).glob("**/run-*.wandb"), key=lambda p: p.stat().st_mtime)
