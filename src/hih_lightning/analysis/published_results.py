"""The paper's numbers (HIH_SPEC section 7), printed beside ours in every test report."""

from __future__ import annotations

# inter-ocular NME (%) per (dataset, model variant) and row key of our results table
PUBLISHED_NME: dict[str, dict[str, dict[str, float]]] = {
    "wflw": {
        "hih_t": {"full": 4.27, "pose": 7.38, "expression": 4.33, "illumination": 4.59,
                  "makeup": 4.01, "occlusion": 5.16, "blur": 5.00},
        "hih_s": {"full": 4.13, "pose": 7.20, "expression": 4.18, "illumination": 4.38,
                  "makeup": 3.90, "occlusion": 4.98, "blur": 4.71},
        "hih_b": {"full": 4.08, "pose": 6.87, "expression": 4.06, "illumination": 4.34,
                  "makeup": 3.85, "occlusion": 4.85, "blur": 4.66},
    },
    "300w": {"hih_b": {"full": 3.09, "common": 2.65, "challenging": 4.89}},
    "cofw": {"hih_b": {"full": 3.21, "full (inter-pupil)": 4.63}},
}
# failure rates (%) where the paper gives them
PUBLISHED_FR: dict[str, dict[str, dict[str, float]]] = {
    "cofw": {"hih_b": {"full": 0.00, "full (inter-pupil)": 0.39}},
}


def published_row(dataset: str, variant: str, row: str) -> tuple[float | None, float | None]:
    """(NME %, FR %) the paper reports for this row, None where it reports nothing."""
    nme = PUBLISHED_NME.get(dataset, {}).get(variant, {}).get(row)
    fr = PUBLISHED_FR.get(dataset, {}).get(variant, {}).get(row)
    return nme, fr

# The paper's Fig. 4 (HIH_SPEC section 1): inter-ocular NME (%) that quantization alone costs
# (64x64 heatmaps from 256x256 crops, argmax), beside the best NME published at the time.
FIG4_QUANTIZATION_NME: dict[str, float] = {"wflw": 1.29, "300w": 1.11, "cofw": 0.86}
FIG4_BEST_NME: dict[str, float] = {"wflw": 4.14, "300w": 2.93, "cofw": 3.32}
