"""Per-dataset facts: landmark count, mirror map, normalisation pairs, subsets.

This is the only place these facts live (HIH_SPEC sections 6 and 8); everything else looks
them up by dataset name.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _wflw_flip_map() -> tuple[int, ...]:
    contour = list(range(32, -1, -1))
    brows = [46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38]
    nose = [51, 52, 53, 54, 59, 58, 57, 56, 55]
    eyes = [72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65]
    mouth = [82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93]
    pupils = [97, 96]
    return tuple(contour + brows + nose + eyes + mouth + pupils)


def _300w_flip_map() -> tuple[int, ...]:
    contour = list(range(16, -1, -1))
    brows = list(range(26, 16, -1))
    nose = [27, 28, 29, 30, 35, 34, 33, 32, 31]
    eyes = [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    mouth = list(range(54, 47, -1)) + list(range(59, 54, -1)) + list(range(64, 59, -1))
    mouth += [67, 66, 65]
    return tuple(contour + brows + nose + eyes + mouth)


COFW_FLIP_MAP = (1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21,
                 23, 22, 24, 25, 26, 27, 28)


@dataclass(frozen=True)
class DatasetMeta:
    """What a benchmark's landmark layout means.

    ``inter_ocular`` / ``inter_pupil`` are the landmark index pairs whose distance normalises
    NME; ``subsets`` names the per-face attribute flags in the order they are stored.
    """

    name: str
    num_landmarks: int
    flip_map: tuple[int, ...]
    inter_ocular: tuple[int, int]
    inter_pupil: tuple[int, int] | None = None
    subsets: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.flip_map) != self.num_landmarks:
            raise ValueError(f"{self.name}: flip map has {len(self.flip_map)} entries, "
                             f"expected {self.num_landmarks}")


WFLW_SUBSETS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")

WFLW = DatasetMeta("wflw", 98, _wflw_flip_map(), (60, 72), (96, 97), WFLW_SUBSETS)
W300 = DatasetMeta("300w", 68, _300w_flip_map(), (36, 45), None, ("common", "challenging"))
COFW = DatasetMeta("cofw", 29, COFW_FLIP_MAP, (8, 9), (16, 17), ("occluded",))

# YouTube Faces frames with 68 points in the 300-W layout: 300-W's mirror map and inter-ocular
# pair, without 300-W's (common, challenging) subsets.
YTF68 = DatasetMeta("ytf68", 68, W300.flip_map, W300.inter_ocular)

METAINFO: dict[str, DatasetMeta] = {m.name: m for m in (WFLW, W300, COFW, YTF68)}
# The embedded synthetic faces use the WFLW-98 layout and WFLW's six attribute flags.
METAINFO["synthetic"] = DatasetMeta("synthetic", 98, WFLW.flip_map, WFLW.inter_ocular,
                                    WFLW.inter_pupil, WFLW_SUBSETS)


def get_meta(name: str) -> DatasetMeta:
    """Return the metainfo of a dataset, naming the known ones when ``name`` is not."""
    try:
        return METAINFO[name.lower()]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(METAINFO)}") from None
