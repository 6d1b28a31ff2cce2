"""Landmark representations: each codec makes training targets and decodes network outputs."""

from hih_lightning.codecs.base import Codec, Decoded
from hih_lightning.codecs.heatmap import (
    ArgmaxCodec,
    DARKCodec,
    QuarterShiftCodec,
    SoftArgmaxCodec,
)
from hih_lightning.codecs.hih import HIHCodec
from hih_lightning.codecs.offset import OffsetCodec
from hih_lightning.codecs.rounding import RandomizedRoundingCodec
from hih_lightning.codecs.simcc import SimCCCodec

__all__ = ["ArgmaxCodec", "Codec", "DARKCodec", "Decoded", "HIHCodec", "OffsetCodec",
           "QuarterShiftCodec", "RandomizedRoundingCodec", "SimCCCodec",
           "SoftArgmaxCodec"]
