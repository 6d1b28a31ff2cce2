"""Hydra/OmegaConf glue shared by every entry point and by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"

if not OmegaConf.has_resolver("div"):
    # heatmap size = input size / stride, written once in the model config
    OmegaConf.register_new_resolver("div", lambda a, b: int(a) // int(b))


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that names the config key when construction fails."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = OmegaConf.select(cfg, key)
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"config key '{key}' could not be built: {err}") from err


def find_last_checkpoint(log_dir: str | Path, task: str = "train") -> Path:
    """The newest ``last.ckpt`` of any run under ``log_dir`` (``ckpt_path=last``)."""
    candidates = sorted(Path(log_dir).glob(f"{task}/**/checkpoints/last.ckpt"),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"ckpt_path=last: no last.ckpt found under {Path(log_dir) / task}")
    return candidates[-1]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    if value == "last":
        return str(find_last_checkpoint(cfg.paths.log_dir, "train"))
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path={value!r}: no such checkpoint file")
    return str(value)
