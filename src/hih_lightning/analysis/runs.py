"""Load a finished run folder back: its saved config, trained module and test split.

The analysis tools (``tools/``) take a run folder as ``hih-train`` leaves it and look at its
network on its own test split; this is the one place that knows how.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import hih_lightning.config  # noqa: F401  (registers the ${div:} resolver)
from hih_lightning.run_folder import SAVED_CONFIG


def load_run(run: Path, ckpt: str = "checkpoints/last.ckpt"
             ) -> tuple[DictConfig, L.LightningModule, L.LightningDataModule]:
    """(config, module in eval mode with the checkpoint's weights, DataModule set up for
    testing in this process) of a run folder holding ``.hydra/config.yaml``."""
    cfg = OmegaConf.load(run / SAVED_CONFIG)
    cfg.paths.output_dir = str(run)
    cfg.data.num_workers = 0
    model = instantiate(cfg.model)
    state = torch.load(run / ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    return cfg, model.eval(), datamodule
