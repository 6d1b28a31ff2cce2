"""The quantization floor of trained runs: the test NME their codec would reach with a perfect
network (its ideal output decoded), on the run's own test split and crop protocol.

hih-quant measures the floor on the real benchmarks' annotation files; this measures it for
the runs of a sweep (e.g. the synthetic faces at 64 px), so a table of trained NMEs can show
how much of each codec's error is the codec's own. Used for experiments/ablations/README.md.

    python tools/quantization_floor.py logs/ablations64/codec/{0,3,6,9,12}
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

import hih_lightning.config  # noqa: F401  (registers the ${div:} resolver)
from hih_lightning.analysis.quantization import quantization_nme
from hih_lightning.data.metainfo import get_meta


def floor_nme(run: Path) -> tuple[str, float]:
    """(codec name, mean inter-ocular NME in %) of the run's codec decoding ideal targets."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(run)
    cfg.data.num_workers = 0
    codec = instantiate(cfg.model.codec)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    norm = get_meta(cfg.data.dataset).inter_ocular
    errors = [quantization_nme(codec, batch["landmarks_image"].double().numpy(),
                               batch["matrix"].double().numpy(), cfg.model.net.input_size, norm)
              for batch in datamodule.test_dataloader()]
    choices = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.choices
    return str(choices.get("model/codec", "?")), 100 * float(np.concatenate(errors).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with .hydra/")
    args = parser.parse_args()
    print("| codec | quantization floor NME (%) |\n|---|---:|")
    for run in args.runs:
        name, nme = floor_nme(run)
        print(f"| {name} | {nme:.2f} |")


if __name__ == "__main__":
    main()
