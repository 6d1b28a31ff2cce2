"""Networks: stacked hourglass backbone, sub-pixel heads, published-checkpoint import."""

from hih_lightning.models.hih import VARIANTS, HIHNet, build_model, parameter_counts
from hih_lightning.models.output import NetOutput
from hih_lightning.models.published import load_published_checkpoint

__all__ = ["HIHNet", "NetOutput", "VARIANTS", "build_model", "parameter_counts",
           "load_published_checkpoint"]
