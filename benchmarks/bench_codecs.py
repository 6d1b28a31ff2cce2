"""Encode + decode time of every codec for one training batch (16 x 98 landmarks, 64x64).

Compares the batched torch codecs with the per-landmark numpy loop that data loaders
usually run (build each 64x64 Gaussian with numpy, decode each with np.argmax), and puts
the encode time next to the memory-bandwidth floor: a 16x98x64x64 float32 target is
25.7 MB, so no encoder can beat (bytes written) / (fill bandwidth).

    python benchmarks/bench_codecs.py                 # 1 CPU thread
    python benchmarks/bench_codecs.py --threads 8
    python benchmarks/bench_codecs.py --device cuda   # if available
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from hih_lightning.codecs import (
    ArgmaxCodec,
    Codec,
    DARKCodec,
    HIHCodec,
    OffsetCodec,
    QuarterShiftCodec,
    RandomizedRoundingCodec,
    SoftArgmaxCodec,
)


def _timeit(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of fn() in milliseconds, after two warm-up calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def numpy_reference(points: np.ndarray, size: int, sigma: float
                    ) -> tuple[Callable[[], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """The usual per-landmark loop: one dense numpy Gaussian per landmark, argmax per map."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def encode() -> np.ndarray:
        b, n, _ = points.shape
        out = np.zeros((b, n, size, size), np.float32)
        for i in range(b):
            for j in range(n):
                cx, cy = np.floor(points[i, j] + 0.5)
                out[i, j] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
        return out

    def decode(maps: np.ndarray) -> np.ndarray:
        b, n = maps.shape[:2]
        res = np.zeros((b, n, 2), np.float32)
        for i in range(b):
            for j in range(n):
                y, x = np.unravel_index(np.argmax(maps[i, j]), maps[i, j].shape)
                res[i, j] = (x, y)
        return res

    return encode, decode


def bandwidth_gbs(nbytes: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """(fill_, clone) bandwidth in GB/s of bytes written, on a buffer of nbytes."""
    buf = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    fill = _timeit(lambda: buf.fill_(1.0), repeats, device)
    clone = _timeit(lambda: buf.clone(), repeats, device)
    return nbytes / fill / 1e6, nbytes / clone / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--landmarks", type=int, default=98)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (used only if available)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA not available; falling back to CPU")
        device = torch.device("cpu")
    size, sigma = args.size, 1.5
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(args.batch, args.landmarks, 2, generator=gen) * (size - 1)

    enc, dec = numpy_reference(points.numpy(), size, sigma)
    maps = enc()
    ref_enc = _timeit(enc, max(3, args.repeats // 3), torch.device("cpu"))
    ref_dec = _timeit(lambda: dec(maps), max(3, args.repeats // 3), torch.device("cpu"))
    ref_total = ref_enc + ref_dec
    target_bytes = maps.nbytes

    codecs: list[tuple[str, Codec]] = [
        ("HIH (k=8)", HIHCodec(heatmap_size=size)),
        ("HIH published_compat", HIHCodec(heatmap_size=size, published_compat=True)),
        ("Argmax", ArgmaxCodec(heatmap_size=size)),
        ("QuarterShift", QuarterShiftCodec(heatmap_size=size)),
        ("DARK (blur 11)", DARKCodec(heatmap_size=size)),
        ("SoftArgmax", SoftArgmaxCodec(heatmap_size=size)),
        ("RandomizedRounding", RandomizedRoundingCodec(heatmap_size=size)),
        ("Offset (FC)", OffsetCodec(heatmap_size=size)),
    ]
    pts = points.to(device)
    rows = []
    for name, codec in codecs:
        targets = codec.encode(pts)
        nbytes = sum(t.numel() * t.element_size() for t in targets.values())
        out = codec.ideal_output(pts)
        t_enc = _timeit(lambda c=codec: c.encode(pts), args.repeats, device)
        t_dec = _timeit(lambda c=codec, o=out: c.decode(o), args.repeats, device)
        rows.append((name, t_enc, t_dec, nbytes))

    fill, clone = bandwidth_gbs(target_bytes, device, args.repeats)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, "
          f"batch {args.batch} x {args.landmarks} landmarks, {size}x{size} heatmaps, "
          f"torch {torch.__version__}\n")
    print("| codec | encode ms | decode ms | total ms | speed-up vs numpy loop "
          "| target writes GB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| numpy per-landmark loop (reference) | {ref_enc:.2f} | {ref_dec:.2f} "
          f"| {ref_total:.2f} | 1.0x | {target_bytes / ref_enc / 1e6:.2f} |")
    for name, t_enc, t_dec, nbytes in rows:
        total = t_enc + t_dec
        print(f"| {name} | {t_enc:.2f} | {t_dec:.2f} | {total:.2f} | "
              f"{ref_total / total:.1f}x | {nbytes / t_enc / 1e6:.2f} |")
    floor_ms = target_bytes / (fill * 1e6)
    print(f"\nmemory-bandwidth floor: one {args.batch}x{args.landmarks}x{size}x{size} float32 "
          f"target = {target_bytes / 1e6:.1f} MB; measured fill_ {fill:.2f} GB/s, "
          f"clone {clone:.2f} GB/s (bytes written / time) -> no encoder can write it in less "
          f"than {floor_ms:.2f} ms here.")


if __name__ == "__main__":
    main()
