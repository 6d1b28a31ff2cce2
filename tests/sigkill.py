"""A callback that signals its own training process at a chosen batch: by default SIGKILL, as a
pre-empting scheduler or the out-of-memory killer would (no hook, no ``finally``, no flush).

Loaded by ``hih-train +callbacks.kill._target_=sigkill.KillAt`` with ``tests/`` on
``PYTHONPATH``; it acts only where ``HIH_KILL_AT=<epoch>,<batch>`` is set, so the resumed run
(whose saved config still lists it) runs through. ``HIH_KILL_SIGNAL=SIGUSR2`` sends that
signal instead (SLURM's warning before it pre-empts a job).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


class KillAt(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        at = os.environ.get("HIH_KILL_AT")
        if at and (trainer.current_epoch, batch_idx) == tuple(map(int, at.split(","))):
            os.kill(os.getpid(), signal.Signals[os.environ.get("HIH_KILL_SIGNAL", "SIGKILL")])
