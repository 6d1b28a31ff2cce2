"""What a killed run needs to resume to exactly the run it would have been.

Lightning restores the weights, the optimizer, the scheduler and its loop counters from a
checkpoint. The data's place is kept by the datamodule (``FaceDataModule.state_dict``); the
rest is here:

- a checkpoint to resume from that is never older than the last epoch, nor than a few minutes
  of training: :class:`LastCheckpoint` keeps ``last.ckpt`` current, and on SLURM's warning
  signal saves it and requeues the job, which resumes from it (``train.requeued_checkpoint``);
- the global torch RNG, which a training step may draw from (randomized rounding draws its
  targets from it): :class:`StepSeed` seeds it from (seed, rank, global step) before every
  step, so a step's draws do not depend on what ran before it in the process;
- a checkpoint file that a kill during its write would leave half-written:
  :class:`AtomicCheckpointIO` writes beside the target and renames over it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hih_lightning.atomic import atomic_file

log = logging.getLogger(__name__)


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

    In a SLURM job (``SLURM_JOB_ID`` set), ``requeue_signal`` (what SLURM sends before it
    pre-empts the job or its time runs out: ``#SBATCH --signal``; submitit's launcher asks for
    SIGUSR2) also saves it, at the end of the training step under way, then requeues the job
    with ``scontrol requeue`` and ends the process. Lightning's own SLURM handler saves an
    ``hpc_ckpt`` wherever the signal lands, possibly between two parameter updates of a step.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only at a step
    where it also writes a top-k checkpoint: with a monitored metric, an epoch that did not
    improve it left ``last.ckpt`` at the best epoch, and a killed run resumed from there.

    Being a :class:`Checkpoint`, it runs its epoch-end hook after the LightningModule's (whose
    finiteness check must pass first); listed after the ``ModelCheckpoint`` (``train.build``
    sees to it), its file holds that callback's choice of the epoch's best checkpoint too.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = None,
                 requeue_signal: str | None = "SIGUSR2") -> None:
        for name, value in (("every_n_train_steps", every_n_train_steps),
                            ("every_n_minutes", every_n_minutes)):
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value}: give a positive number, or null for never")
        if requeue_signal is not None and not hasattr(signal.Signals, requeue_signal):
            raise ValueError(f"requeue_signal={requeue_signal!r}: not a signal name (SIGUSR2)")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_train_steps, self.every_n_minutes = every_n_train_steps, every_n_minutes
        self.requeue_signal = requeue_signal
        self._saved_at = time.monotonic()
        self._signalled = False
        self._previous_handler: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = time.monotonic()
        if self.requeue_signal is not None and os.environ.get("SLURM_JOB_ID"):
            # after Lightning's own handlers (registered before training starts): this one wins
            self._previous_handler = signal.signal(signal.Signals[self.requeue_signal],
                                                   self._on_signal)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.Signals[self.requeue_signal], self._previous_handler)
            self._previous_handler = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True  # acted on at the end of the step: a signal may land mid-step

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
        signalled = self._was_signalled(trainer)
        if due or signalled:
            self._save(trainer)
        if signalled:
            self._requeue(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._skip(trainer):
            self._save(trainer)
            if self._was_signalled(trainer):
                self._requeue(trainer)

    def _was_signalled(self, trainer: L.Trainer) -> bool:
        if self._previous_handler is None:
            return False
        if trainer.world_size > 1:  # the processes may see the signal at different steps
            return bool(trainer.strategy.broadcast(self._signalled))
        return self._signalled

    def _requeue(self, trainer: L.Trainer) -> None:
        """Put this SLURM job back in the queue and end the process; a failed requeue leaves
        training running (the saved checkpoint stays for a manual resume)."""
        job = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        self._signalled = False
        ok = True
        if trainer.is_global_zero:
            try:
                ok = subprocess.run(["scontrol", "requeue", job], check=False,
                                    timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
        if not trainer.strategy.broadcast(ok):
            log.error("SLURM job %s: scontrol requeue failed; %s is saved, training goes on",
                      job, self.path)
            return
        log.warning("SLURM job %s requeued on %s at step %d; it resumes from %s", job,
                    self.requeue_signal, trainer.global_step, self.path)
        raise SystemExit(0)

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
