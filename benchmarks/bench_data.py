"""Can 8 data-loader workers feed HIH training? Samples/s per worker, on the fly vs cached.

Generates benchmark-sized JPEGs (default 64 of 1024x768, WFLW's typical size) with random
98-point faces in a WFLW official layout, then times the full training-sample path of one
worker process (``FaceDataset.__getitem__``: cv2 decode -> crop + augmentation as one warp ->
the photometric list (published: blur, occlusion) -> tensors), for the original images and for
the ``hih-prepare`` cache, and compares 8 workers (assumed to scale linearly with CPU cores)
with the demand of the training step:

- HIH_B on one H100: an ASSUMED rate (``--gpu-rate`` overrides it): the forward FLOPs
  counted here x3 for a training step, at 15% of the H100's dense bf16 peak (a typical
  utilisation for narrow hourglass convolutions in bf16 + channels_last); ~1,450 images/s.
  Replace it with a measured rate when a GPU is at hand.
- hih_cpu on this CPU: MEASURED (forward + backward + Adam step, batch 16, 128 px).

A second table times the published photometric list (albumentations, issue #14) against the
hand-written blur and occlusion it replaced, in the same run on the same 256 px samples.

    python benchmarks/bench_data.py                     # markdown tables
    python benchmarks/bench_data.py --images 32 --seconds 2
    python benchmarks/bench_data.py --photometric-only  # the second table alone
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from hih_lightning.data.benchmarks import WFLWDataModule
from hih_lightning.data.datamodules import FaceDataset
from hih_lightning.prepare import write_cache

H100_BF16_DENSE = 989e12  # FLOP/s, NVIDIA spec sheet (SXM, dense)
ASSUMED_UTILISATION = 0.15


def make_images(root: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    """A WFLW layout with ``count`` JPEGs (smooth noise, so they compress like photos)."""
    rng = np.random.default_rng(seed)
    lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    lists.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        name = f"0--Parade/img_{i}.jpg"
        path = root / "WFLW_images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        side = rng.uniform(120, 400)
        centre = rng.uniform([side / 2, side / 2], [width - side / 2, height - side / 2])
        pts = centre + rng.uniform(-side / 2, side / 2, (98, 2))
        rect = np.r_[pts.min(0), pts.max(0)]
        lines.append(" ".join([f"{v:.4f}" for v in pts.ravel()] + [f"{v:.0f}" for v in rect]
                              + ["0"] * 6 + [name]))
    for split in ("train", "test"):
        (lists / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(lines))


def per_worker_rate(dataset: torch.utils.data.Dataset, seconds: float) -> float:
    """Samples/s of one process looping over training keys (one worker's work)."""
    n, done, key = len(dataset), 0, 0
    dataset[0]  # warm-up (imports, caches)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[key % n + n * (key // n)]  # new epoch -> new augmentation each pass
        key += 1
        done += 1
    return done / (time.perf_counter() - start)


class PreviousPixels:
    """The pre-#14 hand-written pixel augmentation, kept as this benchmark's baseline only.

    Blur with probability 0.3, sigma U(0, 5) x size / 256 (cv2.GaussianBlur, replicated
    border), then with probability 0.5 one rectangle of sides 1..int(0.4 size) in a uniformly
    random colour; drawn from the sample's generator as the published list is.
    """

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = image.shape[0]
        if rng.random() < 0.3:
            sigma = float(rng.uniform(0.0, 5.0)) * size / 256
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                     borderType=cv2.BORDER_REPLICATE)
        if rng.random() < 0.5:
            side = max(1, int(0.4 * size))
            w, h = (int(v) for v in rng.integers(1, side + 1, size=2))
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            image = image.copy()
            image[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, size=3)
        return image


def photometric_rates(dataset: FaceDataset, seconds: float, rounds: int = 8
                      ) -> tuple[float, float]:
    """Samples/s with the previous pixel code and with the published list, alternating rounds
    (so drift of a shared machine hits both alike); medians of the rounds."""
    transform = dataset.transform
    published = transform.photometric
    rates: dict[str, list[float]] = {"previous": [], "published": []}
    for _ in range(rounds):
        for name, pixels in (("previous", PreviousPixels()), ("published", published)):
            transform.photometric = pixels
            rates[name].append(per_worker_rate(dataset, seconds / rounds))
    transform.photometric = published
    return statistics.median(rates["previous"]), statistics.median(rates["published"])


def print_photometric_table(rows: list[tuple[str, float, float]]) -> None:
    print("\n| crop | path | previous blur + occlusion (samples/s) | published list, "
          "albumentations (samples/s) | ratio (target >= 0.9) |")
    print("|---|---|---|---|---|")
    for path, before, after in rows:
        print(f"| 256 | {path} | {before:.0f} | {after:.0f} | {after / before:.2f} |")


def hih_b_forward_flops() -> float:
    """FLOPs of one HIH_B forward at 256 px (counted on CPU with torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hih_lightning import build_model

    net = build_model("hih_b", num_landmarks=98).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 256, 256))
    return float(counter.get_total_flops())


def cpu_step_rate(batch: int = 16, steps: int = 3) -> float:
    """Measured hih_cpu training images/s on this CPU (forward, backward, Adam step)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from hih_lightning.config import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=hih_cpu"])
    model = instantiate(cfg.model)
    opt = model.configure_optimizers()["optimizer"]
    images = torch.randint(0, 256, (batch, 3, 128, 128), dtype=torch.uint8)
    batch_in = {"image": images, "landmarks": torch.rand(batch, 98, 2) * 127}

    def step() -> None:
        opt.zero_grad()
        model.training_step(batch_in, 0).backward()
        opt.step()

    model.log_dict = lambda *a, **k: None  # no trainer attached
    model.log = lambda *a, **k: None
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per path")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--gpu-rate", type=float, default=None,
                        help="HIH_B images/s on the GPU (default: derived assumption)")
    parser.add_argument("--photometric-only", action="store_true",
                        help="only the previous-vs-published photometric table")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a data-loader worker runs single-threaded
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "WFLW"
        make_images(root, args.images, args.width, args.height)
        rows, photometric_rows = [], []
        for size in (256,) if args.photometric_only else (256, 128):
            dm = WFLWDataModule(root=root, image_size=size, num_workers=0)
            dm.setup("fit")
            write_cache(dm, Path(tmp) / f"cache{size}")
            cached = WFLWDataModule(root=root, image_size=size, num_workers=0,
                                    cache_dir=Path(tmp) / f"cache{size}")
            cached.setup("fit")
            if size == 256:
                for path, data in (("on the fly", dm), ("hih-prepare cache", cached)):
                    photometric_rows.append((path, *photometric_rates(data.datasets["train"],
                                                                      args.seconds)))
            if not args.photometric_only:
                fly = per_worker_rate(dm.datasets["train"], args.seconds)
                hit = per_worker_rate(cached.datasets["train"], args.seconds)
                rows.append((size, fly, hit))
    print_photometric_table(photometric_rows)
    if args.photometric_only:
        return

    torch.set_num_threads(os.cpu_count() or 1)
    flops = hih_b_forward_flops()
    assumed = H100_BF16_DENSE * ASSUMED_UTILISATION / (3 * flops)
    gpu_rate = args.gpu_rate or assumed
    cpu_rate = cpu_step_rate()
    demands = {256: ("HIH_B, 1x H100 (assumed)", gpu_rate),
               128: (f"hih_cpu, this CPU ({os.cpu_count()} cores, measured)", cpu_rate)}

    w = args.workers
    print(f"\n{args.images} JPEGs of {args.width}x{args.height}; one worker = one process, "
          f"1 thread; {w} workers assumed = {w} x one worker (needs {w} free cores).")
    print(f"HIH_B forward: {flops / 1e9:.1f} GFLOP/image -> assumed GPU demand "
          f"{assumed:.0f} images/s (3x forward FLOPs at {ASSUMED_UTILISATION:.0%} of "
          f"{H100_BF16_DENSE / 1e12:.0f} TFLOP/s).\n")
    print(f"| crop | path | per worker (samples/s) | {w} workers | training demand "
          f"(images/s) | {w} workers keep up? |")
    print("|---|---|---|---|---|---|")
    for size, fly, hit in rows:
        label, demand = demands[size]
        for path, rate in (("on the fly (decode + warp)", fly), ("hih-prepare cache", hit)):
            ok = "yes" if w * rate >= demand else f"no ({demand / rate:.0f} workers needed)"
            print(f"| {size} | {path} | {rate:.0f} | {w * rate:.0f} | {demand:.0f} ({label}) "
                  f"| {ok} |")


if __name__ == "__main__":
    main()
