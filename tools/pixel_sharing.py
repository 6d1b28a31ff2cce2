"""How often do landmarks share an integer heatmap pixel? Decides hih_local's channel layout.

A local decimal head with landmark-*shared* channels predicts one k x k decimal map per pixel,
so two landmarks on the same integer pixel would have to share a decimal answer: harmless if
they also share the decimal cell, a forced error if not. This counts, per heatmap size, the
share of landmarks whose integer pixel (floor of the heatmap position, gt_box crop) holds
another landmark of the same face, and the share that also needs a *different* k x k cell.

    python tools/pixel_sharing.py                       # WFLW test (../shared/data) + synthetic
    python tools/pixel_sharing.py --sizes 16 32 64 --k 4 8
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from hih_lightning.analysis.quantization import (
    Protocol,
    QuantSource,
    crop_matrices,
    load_records,
    to_crop,
)
from hih_lightning.data.synthetic import SyntheticFaces

SHARED = Path(os.environ.get("HIH_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))


def sharing(positions: np.ndarray, k: int) -> tuple[float, float]:
    """(shared pixel, shared pixel with a different decimal cell) as fractions of landmarks.

    positions (B, N, 2) in heatmap units, already inside the map.
    """
    pixel = np.floor(positions).astype(np.int64)
    cell = np.minimum(np.floor((positions - pixel) * k).astype(np.int64), k - 1)
    same_pixel = (pixel[:, :, None] == pixel[:, None, :]).all(-1)        # (B, N, N)
    same_cell = (cell[:, :, None] == cell[:, None, :]).all(-1)
    np.einsum("bii->bi", same_pixel)[:] = False                           # not with itself
    return float(same_pixel.any(-1).mean()), float((same_pixel & ~same_cell).any(-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    sets: dict[str, tuple[np.ndarray, list]] = {}
    wflw = SHARED / "wflw" / "WFLW_annotations" / "list_98pt_test"
    if wflw.is_dir():
        records = load_records(QuantSource("wflw", "wflw", "wflw_subset_union", wflw))
        sets["WFLW test (1,966 faces)"] = (np.stack([r.landmarks for r in records]), records)
    else:
        print(f"(WFLW skipped: {wflw} not found)")
    synthetic = SyntheticFaces(500, seed=2_000_003)  # the test split's seed (datamodules.py)
    records = [synthetic.record(i) for i in range(len(synthetic))]
    sets["synthetic test (500 faces)"] = (np.stack([r.landmarks for r in records]), records)

    print("| faces | heatmap | landmarks sharing their pixel (%) | "
          + " | ".join(f"... with a different cell, k={k} (%)" for k in args.k) + " |")
    print("|---|---:|---:|" + "---:|" * len(args.k))
    for name, (landmarks, recs) in sets.items():
        for size in args.sizes:
            input_size = 4 * size
            crop = to_crop(landmarks, crop_matrices(recs, Protocol("gt_box"), input_size))
            pos = np.clip(crop / 4, 0, size - 1e-6)
            shared = [sharing(pos, k) for k in args.k]
            print(f"| {name} | {size}x{size} | {100 * shared[0][0]:.1f} | "
                  + " | ".join(f"{100 * s[1]:.1f}" for s in shared) + " |")


if __name__ == "__main__":
    main()
