"""Take a trained run's test error apart: wrong integer pixel vs sub-pixel head vs quantization.

For decoders that read a sub-pixel head at the integer argmax (HIH with any decimal head or
window, FC offsets, offset maps). The same network output is decoded several ways on the run's
test split ("true" = from the ground truth); NME (%) per decode, then the landmarks grouped by
how far their integer argmax is from the true pixel (0, 1, 2+ px, Chebyshev), with each
group's share and its part of the NME (the parts add up to the NME).

    python tools/error_breakdown.py <run folder> [<run folder> ...]    # checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hih_lightning.analysis.runs import load_run
from hih_lightning.codecs import DARKCodec
from hih_lightning.codecs.gaussian import flat_argmax, split_integer
from hih_lightning.metrics import normaliser
from hih_lightning.models.output import NetOutput
from hih_lightning.module import crop_to_image

GROUPS = ("integer right", "1 px off", "2+ px off")


def _errors(model: torch.nn.Module, points: torch.Tensor, batch: dict) -> np.ndarray:
    """Per-landmark error (B, N) over the image's inter-ocular distance, in %."""
    image = crop_to_image(points * model.stride, batch["matrix"]).double()
    truth = batch["landmarks_image"].double()
    dist = torch.linalg.vector_norm(image - truth, dim=-1)
    return (100 * dist / normaliser(truth, model.meta.inter_ocular)[:, None]).numpy()


def breakdown(run: Path, ckpt: str) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """(NME per decode, {group: (share of landmarks %, part of the NME)}) on the test split."""
    _, model, datamodule = load_run(run, ckpt)
    codec = model.codec
    dark = DARKCodec(heatmap_size=codec.heatmap_size, sigma=codec.sigma)
    rows: dict[str, list[np.ndarray]] = {}
    offs: list[np.ndarray] = []
    for batch in datamodule.test_dataloader():
        with torch.no_grad():
            out = model(batch["image"])
        truth = batch["landmarks"] / model.stride
        integer, _ = split_integer(truth, codec.heatmap_size)
        ideal = codec.ideal_output(truth)
        floor = codec.decode(ideal).landmarks              # true integer + true sub-pixel cell
        ix, iy, _ = flat_argmax(out.heatmaps[:, -1])
        argmax = torch.stack((ix, iy), dim=-1)
        true_heatmaps = NetOutput(heatmaps=ideal.heatmaps, decimals=out.decimals,
                                  offsets=out.offsets)
        decodes = {
            "decoder as trained": codec.decode(out).landmarks,
            "integer argmax + pixel centre": argmax + 0.5,
            "integer argmax + true sub-pixel": argmax + (floor - integer),
            "true integer + predicted sub-pixel (read at the true pixel)":
                codec.decode(true_heatmaps).landmarks,
            "true integer + pixel centre": integer + 0.5,
            "true integer + true sub-pixel (quantization floor)": floor,
            "DARK peak of the integer heatmap + 0.5": dark.decode(out).landmarks + 0.5,
        }
        for name, points in decodes.items():
            rows.setdefault(name, []).append(_errors(model, points.float(), batch))
        offs.append((argmax - integer).abs().amax(-1).numpy())
    nme = {name: float(np.concatenate(v).mean()) for name, v in rows.items()}
    err = np.concatenate(rows["decoder as trained"]).ravel()
    off = np.concatenate(offs).ravel()
    masks = (off == 0, off == 1, off >= 2)
    groups = {g: (100 * m.mean(), err[m].sum() / err.size)
              for g, m in zip(GROUPS, masks, strict=True)}
    return nme, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with .hydra/config.yaml")
    parser.add_argument("--ckpt", default="checkpoints/last.ckpt")
    args = parser.parse_args()
    results = {run.name: breakdown(run, args.ckpt) for run in args.runs}
    names = list(results)
    print("| decode (NME %, test split) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for decode in next(iter(results.values()))[0]:
        print(f"| {decode} | " + " | ".join(f"{results[n][0][decode]:.2f}" for n in names) + " |")
    print("\n| landmarks: share % / part of the NME | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for group in GROUPS:
        cells = [f"{results[n][1][group][0]:.1f} / {results[n][1][group][1]:.2f}" for n in names]
        print(f"| {group} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
