"""What each sub-pixel head costs: parameters, GMACs and training memory per image.

The local decimal head (``hih_local``) trades the published head's down-sampling trunk for
N*k*k logits at every pixel; this puts that cost beside the published head (``hih``), the
offset maps, SimCC and no head at all, for the CPU budgets and the published 256 px model.

- GMACs: forward multiply-accumulates of one image, counted by ``torch.utils.flop_counter``
  (FLOPs / 2), whole network and the head's share (network minus ``head="none"``).
- memory: bytes autograd saves for backward for one image (training mode), the activation
  memory a training step holds, device-independent; plus the head's output size (for
  ``hih_local``: its features plus the logits read at one pixel per landmark, as the loss
  reads them; ``LocalDecimals`` never builds the N*k*k maps).

    python benchmarks/bench_heads.py                 # hih_cpu at 64 / 128 px, hih_b at 256 px
    python benchmarks/bench_heads.py --configs hih_cpu:64:4
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from hih_lightning import build_model
from hih_lightning.models.output import LocalDecimals

HEADS = ("none", "hih", "hih_local", "offset_map", "simcc")


def measure(variant: str, input_size: int, k: int, head: str) -> dict[str, float]:
    """Parameters, forward GMACs, saved-for-backward MB and output MB for one image."""
    net = build_model(variant, num_landmarks=98, decimal_size=k, input_size=input_size,
                      head=head).train()
    images = torch.randn(1, 3, input_size, input_size)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(images)
        extra = next((t for t in (out.decimals, out.offsets, out.simcc) if t is not None), None)
        if isinstance(extra, LocalDecimals):  # logits at one pixel per landmark, as the loss
            pixel = torch.zeros(1, 98, dtype=torch.long)
            extra = torch.cat([extra.features.flatten(), extra.at(pixel, pixel).flatten()])
    return {"params": sum(p.numel() for p in net.parameters()),
            "gmacs": counter.get_total_flops() / 2e9, "saved_mb": saved / 2**20,
            "head_out_mb": 0.0 if extra is None else extra.numel() * 4 / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+",
                        default=["hih_cpu:64:4", "hih_cpu:128:8", "hih_b:256:8"],
                        help="variant:input_size:k")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    print("| model | input | k | head | parameters | GMACs | head GMACs | saved for backward "
          "(MB/image) | head output (MB/image) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for spec in args.configs:
        variant, size, k = spec.split(":")
        rows = {head: measure(variant, int(size), int(k), head) for head in HEADS}
        base = rows["none"]["gmacs"]
        for head, r in rows.items():
            print(f"| {variant} | {size} | {k} | {head} | {r['params']:,} | {r['gmacs']:.3f} | "
                  f"{r['gmacs'] - base:.3f} | {r['saved_mb']:.1f} | {r['head_out_mb']:.2f} |")


if __name__ == "__main__":
    main()
