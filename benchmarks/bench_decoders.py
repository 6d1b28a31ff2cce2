"""What each decoder of the decoder table costs: parameters, GMACs and ms per training step.

Every row is the model node of a real experiment config with the decoder's overrides, the
same ones its training runs used (``DECODERS``), so the cost stands beside the NME it bought.
GMACs: forward multiply-accumulates of one image (``torch.utils.flop_counter``), plus for
local decimal heads the logits the loss reads (their 1x1 conv is evaluated only there).
ms per step: the median of ``--steps`` real training steps (``HIHLitModule.training_step``,
encode, loss, backward, Adam) at the experiment's batch size, on the threads torch has.

    OMP_NUM_THREADS=1 python benchmarks/bench_decoders.py            # both budgets
    python benchmarks/bench_decoders.py --budgets synthetic_ablation_64 --steps 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import Mode, compose_cfg, cpu_description, time_step  # noqa: E402

from hih_lightning.config import instantiate_node  # noqa: E402
from hih_lightning.models.output import LocalDecimals  # noqa: E402

# decoder -> overrides (the settings of experiments/subpixel/README.md's decoder table)
DECODERS: dict[str, list[str]] = {
    "argmax": ["model/codec=argmax"],
    "soft-argmax": ["model/codec=soft_argmax", "model.loss.integral_weight=0.3"],
    "offset maps": ["model/codec=offset_map", "model.loss.offset_weight=0.06"],
    "offset maps, r = 1 neighbours": ["model/codec=offset_map", "model.codec.window=1",
                                      "model.loss.offset_weight=0.02"],
    "SimCC": ["model/codec=simcc", "model.loss.simcc_weight=0.3"],
    "HIH, published head": ["model/codec=hih"],
    "HIH-local as first built (r = 0, softmax labels)": [
        "model/codec=hih_local", "model.codec.window=0", "model.codec.decimal_decode=argmax",
        "model.codec.soft_label=softmax"],
    "HIH-local (r = 1 mosaic, Gaussian labels)": ["model/codec=hih_local"],
}


def training_reads(codec) -> int:
    """Pixels per landmark at which the loss reads a local decimal head, as the codec's own
    targets say (the window's training mosaic, or the true pixel alone)."""
    targets = codec.encode(torch.full((1, 1, 2), codec.heatmap_size / 2))
    pixels = targets.get("decimal_pixels")
    return 1 if pixels is None else pixels.shape[2]


def forward_gmacs(model: torch.nn.Module, size: int) -> float:
    """Forward GMACs of one image, with the logits the loss reads from a local head."""
    net = model.net.train()
    counter = FlopCounterMode(display=False)
    with counter:
        out = net(torch.randn(1, 3, size, size))
        if isinstance(out.decimals, LocalDecimals):
            n = out.decimals.weight.shape[0]
            pixel = torch.zeros(1, n, training_reads(model.codec), dtype=torch.long)
            out.decimals.at(pixel, pixel)
    return counter.get_total_flops() / 2e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+",
                        default=["synthetic_ablation_64", "synthetic_hih"])
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {cpu_description()}\n")
    print("| budget | decoder | parameters | GMACs / image | ms / training step | "
          "x argmax's step |")
    print("|---|---|---:|---:|---:|---:|")
    mode = Mode("cl", channels_last=True)
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            base = None
            for name in args.decoders:
                cfg = compose_cfg(budget, "cpu", None, Path(tmp), DECODERS[name])
                model = instantiate_node(cfg, "model")
                params = sum(p.numel() for p in model.parameters())
                gmacs = forward_gmacs(model, int(cfg.model.net.input_size))
                seconds, _, _ = time_step(cfg, mode, int(cfg.data.batch_size), args.steps,
                                          args.warmup, "cpu")
                base = base or seconds
                print(f"| {budget} | {name} | {params:,} | {gmacs:.3f} | {1e3 * seconds:.0f} | "
                      f"{seconds / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
