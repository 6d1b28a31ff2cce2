"""What a killed run needs to resume to exactly the run it would have been.

Lightning restores the weights, the optimizer, the scheduler and its loop counters from a
checkpoint. The data's place is kept by the datamodule (``FaceDataModule.state_dict``); the
rest is here:

- a checkpoint to resume from that is never older than the last epoch, nor than a few minutes
  of training: :class:`LastCheckpoint` keeps ``last.ckpt`` current;
- the global torch RNG, which a training step may draw from (randomized rounding draws its
  targets from it): :class:`StepSeed` seeds it from (seed, rank, global step) before every
  step, so a step's draws do not depend on what ran before it in the process;
- a checkpoint file that a kill during its write would leave half-written:
  :class:`AtomicCheckpointIO` writes beside the target and renames over it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hih_lightning.atomic import atomic_file


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for one training step of one process."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


class StepSeed(L.Callback):
    """Seed the global torch RNG before each training step from (seed, rank, global step).

    A resumed process has not made the draws the killed one made before the checkpoint (nor
    the data loaders' seed draws, which differ between a fresh and a resumed start), so
    restoring the RNG's state from the checkpoint would still leave it elsewhere than the
    uninterrupted run at the next step. Seeding per step makes each step's draws a function of
    the step alone, as the sampler's keys make each sample's augmentation.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.global_rank, trainer.global_step))


class FollowMovedRunFolder(L.Callback):
    """Resuming a run whose folder was moved since, keep its ``ModelCheckpoint`` bookkeeping.

    Lightning reloads the best-checkpoint state only when the saved ``dirpath`` equals the
    callback's; otherwise it keeps just ``best_model_path``, which names the old place. The
    resumed run then tested a file that is gone, or, forgetting the best score, took its next
    epoch for the best and left the real best's file beside it. Paths under the old folder
    whose file is in the new one are mapped to it before the state loads.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key)
            if not isinstance(callback, ModelCheckpoint) or not state \
                    or not callback.dirpath or not state.get("dirpath"):
                continue
            old, new = Path(state["dirpath"]), Path(callback.dirpath)

            def moved(path: str | None, old: Path = old, new: Path = new) -> str | None:
                if path and Path(path).parent == old and (new / Path(path).name).is_file():
                    return str(new / Path(path).name)
                return path

            if old == new or moved(state.get("best_model_path")) == state.get("best_model_path"):
                continue  # not a moved folder: Lightning's own rule applies
            state["dirpath"] = callback.dirpath
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                state[key] = moved(state.get(key))
            state["best_k_models"] = {moved(k): v for k, v in
                                      (state.get("best_k_models") or {}).items()}


class LastCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` current: written at the end of every training epoch, and
    within an epoch every ``every_n_train_steps`` optimizer steps and every ``every_n_minutes``
    minutes of training (whichever are set).

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only at a step
    where it also writes a top-k checkpoint: with a monitored metric, an epoch that did not
    improve it left ``last.ckpt`` at the best epoch, and a killed run resumed from there.

    Being a :class:`Checkpoint`, it runs its epoch-end hook after the LightningModule's (whose
    finiteness check must pass first); listed after the ``ModelCheckpoint`` (``train.build``
    sees to it), its file holds that callback's choice of the epoch's best checkpoint too.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = None) -> None:
        for name, value in (("every_n_train_steps", every_n_train_steps),
                            ("every_n_minutes", every_n_minutes)):
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value}: give a positive number, or null for never")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_train_steps, self.every_n_minutes = every_n_train_steps, every_n_minutes
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        # an epoch's last batch: the epoch-end save follows after validation
        if self._skip(trainer) or batch_idx + 1 >= trainer.num_training_batches:
            return
        steps = self.every_n_train_steps
        due = bool(steps) and trainer.global_step % steps == 0
        if self.every_n_minutes is not None:
            late = time.monotonic() - self._saved_at >= 60 * self.every_n_minutes
            due = due or trainer.strategy.broadcast(late)  # every process saves, or none
        if due:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._skip(trainer):
            self._save(trainer)

    def _skip(self, trainer: L.Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run
                    or trainer.state.fn != "fit")

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_at = time.monotonic()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint with :func:`~hih_lightning.atomic.atomic_file`: a kill at any moment
    leaves either the previous file or the new one.

    Lightning's own writer stages the file in the system's temporary folder and moves it; when
    that is another file system (a node's local /tmp, the run folder on a shared one) the move
    is a copy, and a kill during the copy truncates ``last.ckpt``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote: Lightning's writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_file(path) as f:
            torch.save(checkpoint, f)
