"""Import the authors' published checkpoint (``{'state_dict': ...}``) into HIHNet.

Their parameter names are listed in ``shared/data/official_release/hih_state_dict_layout.txt``;
this module is the one place that knows how they map onto ours.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from hih_lightning.checkpoints import load_checkpoint
from hih_lightning.models.hih import HIHNet, build_model

log = logging.getLogger(__name__)

_STEM = {"0": "stem.conv", "1": "stem.res1", "3": "stem.res2", "4": "stem.res3"}
_STACK_PARTS = {"res1": "res", "lin1": "feature", "conv_pred": "predict",
                "conv1": "merge_feature", "conv2": "merge_heatmap"}
_HOURGLASS_ROLE = {"1": "up", "2": "down", "3": "out"}
_HEAD = {"conv1": "trunk.widen", "head.0": "project", "head.1": "predict"}


class CheckpointMismatch(KeyError):
    """The checkpoint does not fit the model; the message lists the offending keys."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _residual_tail(tail: str) -> str:
    """A Residual's inner name: only the skip conv is named differently."""
    return tail.replace("skip_layer.", "skip.", 1)


def published_key_to_ours(key: str, depth: int = 4) -> str | None:
    """Our parameter name for one published name, or None if it has no counterpart."""
    key = key.removeprefix("module.")
    if m := re.fullmatch(r"pre_conv\.(\d)\.(.+)", key):
        prefix = _STEM.get(m[1])
        return f"{prefix}.{_residual_tail(m[2])}" if prefix else None
    if m := re.fullmatch(r"hg(\d+)\.res(\d)_(\d)\.(.+)", key):
        nesting = "inner." * (depth - int(m[2]))
        role = _HOURGLASS_ROLE.get(m[3])
        return f"stacks.{m[1]}.hourglass.{nesting}{role}.{_residual_tail(m[4])}" if role else None
    if m := re.fullmatch(r"hg(\d+)\.res_center\.(.+)", key):
        return f"stacks.{m[1]}.hourglass.{'inner.' * depth}{_residual_tail(m[2])}"
    if m := re.fullmatch(r"hg(\d+)_(res1|lin1|conv_pred|conv1|conv2)\.(.+)", key):
        return f"stacks.{m[1]}.{_STACK_PARTS[m[2]]}.{_residual_tail(m[3])}"
    if m := re.fullmatch(r"offset_head\.down_ops\.(\d+)\.(conv1|conv2|downsample\.0)\.(.+)", key):
        part = "shortcut" if m[2] == "downsample.0" else m[2]
        return f"head.trunk.blocks.{m[1]}.{part}.{m[3]}"
    if m := re.fullmatch(r"offset_head\.(conv1|head\.0|head\.1)\.(.+)", key):
        return f"head.{_HEAD[m[1]]}.{m[2]}"
    return None


def convert_published_state_dict(published: dict[str, torch.Tensor],
                                 model: HIHNet) -> dict[str, torch.Tensor]:
    """Rename a published state dict to ours, dropping the never-used skip convs.

    Raises CheckpointMismatch naming every key that is missing, unexpected or mis-shaped.
    """
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected, dropped, misshaped = [], 0, []
    for key, value in published.items():
        name = published_key_to_ours(key, model.depth)
        if name is None:
            unexpected.append(key)
        elif name not in ours:
            # A skip conv inside a Residual whose widths match: built but never used upstream.
            if ".skip." in name:
                dropped += 1
            else:
                unexpected.append(key)
        elif ours[name].shape != value.shape:
            misshaped.append(f"{key}: checkpoint {tuple(value.shape)} vs model "
                             f"{tuple(ours[name].shape)} ({name})")
        else:
            converted[name] = value
    missing = sorted(set(ours) - set(converted))
    if unexpected or missing or misshaped:
        lines = []
        if missing:
            lines.append(f"missing in checkpoint ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            lines.append(f"unexpected in checkpoint ({len(unexpected)}): "
                         f"{', '.join(unexpected[:20])}")
        if misshaped:
            lines.append(f"shape mismatch ({len(misshaped)}): {'; '.join(misshaped[:10])}")
        raise CheckpointMismatch("published checkpoint does not fit the model:\n  "
                                 + "\n  ".join(lines))
    log.info("imported %d published tensors; dropped %d never-used skip-conv tensors",
             len(converted), dropped)
    return converted


def load_published_checkpoint(path: str | Path, variant: str = "hih_b",
                              **model_kwargs: Any) -> HIHNet:
    """Build ``variant`` and load the authors' checkpoint file (a dict with ``state_dict``)."""
    blob = load_checkpoint(path, weights_only=False)
    state = blob.get("state_dict", blob)
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{path}: expected a dict with a 'state_dict' entry")
    model = build_model(variant, **model_kwargs)
    model.load_state_dict(convert_published_state_dict(state, model))
    return model
