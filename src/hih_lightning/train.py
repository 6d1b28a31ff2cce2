"""hih-train: seed -> data, model, callbacks, loggers, trainer -> fit -> test -> report."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from hih_lightning.allocator import keep_freed_memory
from hih_lightning.config import CONFIG_DIR, instantiate_node, resolve_ckpt_path, validate_config
from hih_lightning.reporting import define_wandb_summaries, write_run_report
from hih_lightning.resume import (
    AtomicCheckpointIO,
    FollowMovedRunFolder,
    LastCheckpoint,
    StepSeed,
)
from hih_lightning.run_folder import (
    hydra_cli,
    is_complete,
    job_dir,
    move_job_log,
    record_resume,
    saved_metrics,
    task_overrides,
    user_errors,
    with_run_config,
)

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Validate, then instantiate everything before any work starts: a bad key fails at once.
    Training and evaluation on a CPU reuse freed buffers (:mod:`hih_lightning.allocator`)."""
    validate_config(cfg)
    keep_freed_memory()
    datamodule = instantiate_node(cfg, "data")
    model = instantiate_node(cfg, "model")
    callbacks = [instantiate_node(cfg, f"callbacks.{name}")
                 for name, node in (cfg.get("callbacks") or {}).items() if node is not None]
    loggers = [instantiate_node(cfg, f"logger.{name}")
               for name, node in (cfg.get("logger") or {}).items() if node is not None]
    if not loggers:  # logger=none: a learning-rate monitor would have nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # not config options: a resume equal to the uninterrupted run is not a choice to undo
    callbacks += [StepSeed(cfg.seed), FollowMovedRunFolder()]
    # last.ckpt after every other checkpoint callback's epoch end, so it holds their state
    callbacks.sort(key=lambda c: isinstance(c, LastCheckpoint))
    trainer = instantiate_node(cfg, "trainer", callbacks=callbacks, logger=loggers or False,
                               plugins=[AtomicCheckpointIO()])
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    define_wandb_summaries(trainer.loggers)
    return datamodule, model, trainer


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's logged scalar metrics as plain floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test as the config says; returns the final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    failed = True
    try:
        datamodule, model, trainer = build(cfg)
        ckpt_path = resolve_ckpt_path(cfg)
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = scalar_metrics(trainer)
        if cfg.get("test", True):
            best = None
            if not trainer.fast_dev_run:  # the best-scoring checkpoint's callback, if any
                best = next((c.best_model_path for c in trainer.checkpoint_callbacks
                             if isinstance(c, ModelCheckpoint)), None) or None
            trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
            metrics.update(scalar_metrics(trainer))
            if trainer.is_global_zero:
                write_run_report(model, datamodule, trainer, Path(cfg.paths.output_dir), cfg)
        failed = False
    finally:
        _finish_wandb(exit_code=int(failed))
    return metrics


def _finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run so the next multirun job starts a fresh one (also after a failure,
    marking the run failed, so a crashed job's run is not continued by the next job)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def requeued_checkpoint(cfg: DictConfig, here: Path | None) -> Path | None:
    """The ``last.ckpt`` in this job's own folder when SLURM runs the job again after a requeue
    (``SLURM_RESTART_COUNT`` > 0) and the command line names no checkpoint: the job then
    continues its run without a user action (:class:`~hih_lightning.resume.LastCheckpoint`
    requeues on SLURM's warning signal)."""
    if here is None or cfg.get("ckpt_path") or int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return None
    last = here / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


# Lightning messages with nothing for a user to act on: promotional tips for cloud products,
# and a note that our configured RichModelSummary replaces its default summary.
_LIGHTNING_NOISE = ("\N{ELECTRIC LIGHT BULB} Tip", "Trainer already configured with model summary")


def quiet_lightning() -> None:
    """Drop :data:`_LIGHTNING_NOISE` and Lightning's own internal deprecation warning from the
    console and the log."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith(_LIGHTNING_NOISE))
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@hydra_cli("hih-train", "train")
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_lightning()
    overrides = task_overrides()
    with user_errors("hih-train", job_dir()):
        here = job_dir()
        requeued = requeued_checkpoint(cfg, here)
        if requeued is not None:
            log.info("SLURM requeued this job: resuming it from %s", requeued)
            cfg.ckpt_path = str(requeued)
        cfg = with_run_config(cfg, overrides, task="train")
        run_dir = Path(cfg.paths.output_dir)
        if here is not None and (requeued or here.resolve() != run_dir.resolve()):  # a resume
            move_job_log(here, run_dir)
            if is_complete(cfg):
                log.info("run %s is complete (its checkpoint holds the whole budget and its "
                         "test report exists): nothing to do", run_dir)
                return saved_metrics(run_dir).get(cfg.get("optimized_metric"))
            record_resume(cfg, overrides)
        metrics = run(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
