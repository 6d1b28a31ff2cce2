"""hih-eval: test a checkpoint of ours, or the authors' published one, and write the report."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from hih_lightning.config import CONFIG_DIR, ConfigError, resolve_ckpt_path
from hih_lightning.models.published import load_published_checkpoint
from hih_lightning.reporting import write_run_report
from hih_lightning.run_folder import (
    SAVED_CONFIG,
    hydra_cli,
    job_dir,
    task_overrides,
    user_errors,
    with_run_config,
)
from hih_lightning.train import build, quiet_lightning, scalar_metrics


def run(cfg: DictConfig) -> dict[str, float]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    published = cfg.get("published_checkpoint")
    if published:
        if ckpt_path:
            raise ConfigError("give either ckpt_path or published_checkpoint, not both")
        net = cfg.model.net
        model.net = load_published_checkpoint(published, variant=net.variant,
                                              num_landmarks=net.num_landmarks,
                                              decimal_size=net.decimal_size)
    elif ckpt_path is None:
        raise ConfigError("hih-eval needs ckpt_path=<file>|last, run_dir=<run folder> or "
                          "published_checkpoint=<file>")
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if trainer.is_global_zero:
        write_run_report(model, datamodule, trainer, Path(cfg.paths.output_dir), cfg)
    return scalar_metrics(trainer)


@hydra_cli("hih-eval", "eval")
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    quiet_lightning()
    here = job_dir()
    with user_errors("hih-eval", here):
        cfg = with_run_config(cfg, task_overrides(), task="eval")
        if here is not None:  # the folder's config is the one evaluated: the run's own parts
            OmegaConf.save(cfg, here / SAVED_CONFIG)
        run(cfg)


if __name__ == "__main__":
    main()
