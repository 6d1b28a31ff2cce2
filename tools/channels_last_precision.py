"""How far float32 gradients are from float64 ones, NCHW against channels-last, on this CPU.

Channels-last runs other kernels (oneDNN's brg_conv, PyTorch's channels-last batch norm),
whose sums are ordered differently. This prints the relative error of each gradient against
the same computation in float64: for one BatchNorm2d of the hourglass' size, and for the
whole ``hih_cpu`` training step of the main job at its published init (one batch). Used for
the channels-last decision in experiments/README.md.

    python tools/channels_last_precision.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_train import Mode, build_model, compose_cfg, synthetic_batch  # noqa: E402


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx.double() - exact).norm() / exact.norm().clamp_min(1e-300)).item()


def batch_norm_grads(x: torch.Tensor, g: torch.Tensor, channels_last: bool
                     ) -> dict[str, torch.Tensor]:
    """Gradients of one training-mode BatchNorm2d (weight, bias, input) for upstream ``g``."""
    bn = torch.nn.BatchNorm2d(x.shape[1]).to(x.dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt).detach().requires_grad_()
    bn(x).backward(g.contiguous(memory_format=fmt))
    return {"weight": bn.weight.grad, "bias": bn.bias.grad, "input": x.grad}


def step_grads(dtype: torch.dtype, channels_last: bool, batch: int) -> dict[str, torch.Tensor]:
    """Parameter gradients of the main job's training step: bench_train's seeded init and
    seeded uint8 batch, in ``dtype``."""
    with tempfile.TemporaryDirectory() as out:  # the config's log paths; nothing is written
        cfg = compose_cfg("synthetic_hih", "cpu", None, Path(out))
    module, _ = build_model(cfg, Mode.parse("cl" if channels_last else "fp32"), "cpu")
    module = module.to(dtype)
    module.log_dict = lambda *args, **kwargs: None  # no trainer attached
    data = synthetic_batch(module, batch, int(cfg.data.num_landmarks), "cpu")
    data["landmarks"] = data["landmarks"].to(dtype)
    module.training_step(data, 0).backward()
    return {name: p.grad for name, p in module.named_parameters() if p.grad is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 128, 32, 32, generator=gen, dtype=torch.float64) * 0.01 + 0.3
    g = torch.randn(args.batch, 128, 32, 32, generator=gen, dtype=torch.float64) * 1e-3 + 1e-4
    exact = batch_norm_grads(x, g, channels_last=False)
    print(f"BatchNorm2d(128) on ({args.batch}, 128, 32, 32): relative error of the float32 "
          "gradient against float64\n")
    print("| layout | weight | bias | input |\n|---|---:|---:|---:|")
    for channels_last in (False, True):
        grads = batch_norm_grads(x.float(), g.float(), channels_last)
        cells = " | ".join(f"{relative_error(grads[k], exact[k]):.1e}" for k in exact)
        print(f"| {'channels-last' if channels_last else 'NCHW'} | {cells} |")

    exact = step_grads(torch.float64, channels_last=False, batch=args.batch)
    print(f"\nhih_cpu training step (experiment=synthetic_hih, batch {args.batch}, seeded init):"
          " relative error of each parameter's float32 gradient against float64\n")
    print("| layout | median | 90th percentile | largest BN parameter | largest conv weight |")
    print("|---|---:|---:|---:|---:|")
    for channels_last in (False, True):
        grads = step_grads(torch.float32, channels_last, args.batch)
        errors = {name: relative_error(grads[name], exact[name]) for name in exact}
        values = torch.tensor(sorted(errors.values()))
        bn = max(e for n, e in errors.items() if ".bn." in n)
        conv = max(e for n, e in errors.items() if n.endswith("conv.weight"))
        print(f"| {'channels-last' if channels_last else 'NCHW'} | "
              f"{values.quantile(0.5).item():.1e} | {values.quantile(0.9).item():.1e} | "
              f"{bn:.1e} | {conv:.1e} |")


if __name__ == "__main__":
    main()
