"""One epoch of the published WFLW recipe (``experiment=wflw_hih_b``) on one GPU: images/s.

Generates a WFLW official-layout tree (``--unique`` JPEGs of 1024x768, listed ``--faces``
times in all, so an epoch is long enough to time without writing thousands of files), then
runs the real ``hih-train`` path (Hydra compose -> DataModule -> HIHLitModule -> Trainer) for
one epoch in each mode and reports the training rate measured between CUDA-synchronised
step boundaries, after ``--warmup`` steps:

- ``fp32``: ``trainer.precision=32-true``, NCHW;
- ``bf16+cl``: ``trainer.precision=bf16-mixed`` with channels-last (the recipe's setting).

It also times the loader alone (the same train DataLoader, ``--workers`` processes) so the
table says whether the loader or the GPU limits the run.

    python benchmarks/bench_train_gpu.py                 # needs a CUDA GPU
    python benchmarks/bench_train_gpu.py --faces 2048 --workers 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import make_images  # noqa: E402

from hih_lightning.config import CONFIG_DIR, instantiate_node  # noqa: E402
from hih_lightning.train import build  # noqa: E402

MODES = {"fp32": ("32-true", False), "bf16+cl": ("bf16-mixed", True)}


class StepTimer(L.Callback):
    """Wall time between synchronised step boundaries, skipping the first ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.images, self.seconds = warmup, None, 0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self.images += len(batch["image"])

    def on_train_epoch_end(self, trainer, module) -> None:
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def make_tree(root: Path, unique: int, faces: int) -> Path:
    """A WFLW tree whose train list repeats ``unique`` generated faces up to ``faces`` lines."""
    make_images(root, unique, 1024, 768)
    lst = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    lines = (lst / "list_98pt_rect_attr_train.txt").read_text().splitlines()
    (lst / "list_98pt_rect_attr_train.txt").write_text(
        "\n".join(lines[i % len(lines)] for i in range(faces)))
    return root


def compose_cfg(root: Path, out: Path, mode: str, workers: int, batch: int):
    precision, channels_last = MODES[mode]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[
            "experiment=wflw_hih_b", "trainer=gpu", "logger=none", "callbacks=none",
            f"trainer.precision={precision}", f"model.channels_last={channels_last}",
            "trainer.max_epochs=1", "+trainer.limit_val_batches=0",
            "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
            f"data.root={root}", f"data.num_workers={workers}", f"data.batch_size={batch}",
            f"paths.log_dir={out}", f"paths.output_dir={out / mode}"])


def time_loader(cfg, batches: int) -> float:
    """Images/s of the training DataLoader alone (decode, crop, augment, collate)."""
    datamodule = instantiate_node(cfg, "data")
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)  # workers started
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(loader)["image"])
    return images / (time.perf_counter() - start)


def time_mode(cfg, warmup: int) -> tuple[float, float, float]:
    """(images/s, steady-state seconds, peak GPU memory in GiB) of one training epoch."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    timer = StepTimer(warmup)
    trainer.callbacks.append(timer)
    torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=datamodule)
    return timer.images / timer.seconds, timer.seconds, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unique", type=int, default=256, help="distinct generated JPEGs")
    parser.add_argument("--faces", type=int, default=4096, help="training faces per epoch")
    parser.add_argument("--batch", type=int, default=16, help="per-GPU batch (published: 16)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per mode")
    parser.add_argument("--modes", default="fp32,bf16+cl")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_train_gpu: no CUDA GPU visible")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name()
    print(f"\n{name}, torch {torch.__version__}, hih_b 256 px, batch {args.batch}, "
          f"{args.faces} faces/epoch, {args.workers} workers, {args.warmup} warm-up steps\n")
    print("| mode | images/s | timed s | peak GPU GiB | vs first |")
    print("|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp) / "WFLW", args.unique, args.faces)
        out = Path(tmp) / "runs"
        base = None
        for mode in args.modes.split(","):
            cfg = compose_cfg(root, out, mode, args.workers, args.batch)
            rate, seconds, memory = time_mode(cfg, args.warmup)
            base = base or rate
            print(f"| {mode} | {rate:.0f} | {seconds:.1f} | {memory:.2f} | {rate / base:.2f}x |",
                  flush=True)
        batches = min(100, args.faces // args.batch - 2)
        loader = time_loader(compose_cfg(root, out, "fp32", args.workers, args.batch), batches)
    print(f"| loader alone ({args.workers} workers) | {loader:.0f} | | | |")

if __name__ == "__main__":
    main()
