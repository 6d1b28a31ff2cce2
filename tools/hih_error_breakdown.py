"""Take a trained HIH run's test error apart: integer pixel vs decimal cell vs decoding.

Decodes the same network output several ways on the run's test split (true = from the ground
truth) and prints NME (%) per decode, the decimal cell accuracy (chance 1/k^2) and the share of
landmarks whose integer pixel is wrong. Used for experiments/synthetic/README.md.

    python tools/hih_error_breakdown.py logs/train/runs/<run>       # uses checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hih_lightning.analysis.runs import load_run
from hih_lightning.codecs import DARKCodec
from hih_lightning.codecs.gaussian import split_integer
from hih_lightning.metrics import per_image_nme
from hih_lightning.models.output import NetOutput
from hih_lightning.module import crop_to_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with .hydra/config.yaml")
    parser.add_argument("--ckpt", default="checkpoints/last.ckpt")
    args = parser.parse_args()
    _, model, datamodule = load_run(args.run, args.ckpt)
    codec, size = model.codec, model.codec.heatmap_size
    dark = DARKCodec(heatmap_size=size, sigma=codec.sigma)
    rows: dict[str, list[np.ndarray]] = {}
    hits, wrong_integer = [], []
    for batch in datamodule.test_dataloader():
        with torch.no_grad():
            out = model(batch["image"])
        truth = batch["landmarks"] / model.stride
        integer, _ = split_integer(truth, size)
        diag = codec.diagnostics(out, truth)
        centre = diag["integer_centre"]
        predicted = codec.decode(out).landmarks
        ideal = codec.ideal_output(truth)
        true_decimal = codec.decode(ideal).landmarks - integer.float()
        # the decimal head's answer at the true pixel (for a local head: read there)
        at_truth = codec.decode(NetOutput(heatmaps=ideal.heatmaps, decimals=out.decimals))
        decodes = {
            "HIH: integer argmax + decimal argmax": predicted,
            "integer argmax + pixel centre": centre,
            "integer argmax + true decimal cell": centre - 0.5 + true_decimal,
            "true integer + predicted decimal cell (read at the true pixel)":
                at_truth.landmarks,
            "true integer + pixel centre": integer.float() + 0.5,
            "true integer + true decimal cell (quantization floor)": integer + true_decimal,
            "DARK peak of the integer heatmap + 0.5": dark.decode(out).landmarks + 0.5,
        }
        for name, points in decodes.items():
            image = crop_to_image(points * model.stride, batch["matrix"])
            nme = per_image_nme(image, batch["landmarks_image"].double(),
                                model.meta.inter_ocular)
            rows.setdefault(name, []).append(nme.numpy())
        hits.append(diag["decimal_hit"].float().mean().item())
        wrong_integer.append((centre - 0.5 != integer).any(-1).float().mean().item())
    k = codec.decimal_size
    print(f"| decode ({args.run.name}, test split) | NME (%) |\n|---|---:|")
    for name, values in rows.items():
        print(f"| {name} | {100 * np.concatenate(values).mean():.2f} |")
    print(f"\ndecimal cell accuracy {100 * np.mean(hits):.2f} % (chance {100 / k**2:.2f} %); "
          f"integer pixel wrong for {100 * np.mean(wrong_integer):.1f} % of landmarks")


if __name__ == "__main__":
    main()
