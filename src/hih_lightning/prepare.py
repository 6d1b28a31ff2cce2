"""hih-prepare: decode + crop every face once, so training reads small fixed-size arrays.

Why: a WFLW image is ~1024x768 JPEG; decoding it costs far more than warping the 256 px crop
(see ``benchmarks/bench_data.py``). The cache stores, per split, each face already cut out
by the configured crop protocol, but with ``cache_context`` (default 1.25) times the protocol
box, so online augmentation (translation, rotation) still finds real image content around
the face. Augmentation then warps the cached crop: one extra bilinear resampling for
augmented training samples only. Evaluation crops are an integer-pixel window of the cache
(the margin is made even), so they equal on-the-fly crops up to OpenCV's fixed-point
resampling (+-1 grey level on well under 1% of pixels on the real test images). Rotations
beyond ~18 degrees combined with large translations can reach past the cached margin and see
zero padding where the original image had content; raise ``data.cache_context`` (e.g. 1.5)
when that matters.

Layout, under ``data.cache_dir``::

    cache.json                 dataset, crop protocol, image_size, context, size, splits
    <split>/images.npy         (N, C, C, 3) uint8, read as a memory map (no decoding)
    <split>/labels.npz         landmarks (N, L, 2) original-image px, matrix (N, 2, 3)
                               image px -> cache px, attributes, visible, sources

The matrix back to the original image is kept, so metrics stay in original-image pixels.

    hih-prepare data=wflw data.root=/data/WFLW data.cache_dir=/fast/wflw_cache
    hih-train experiment=wflw_hih_b data.cache_dir=/fast/wflw_cache
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hih_lightning.data.datamodules import FaceDataset
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.transforms import apply_to_landmarks, crop_box, crop_matrix, warp_image
from hih_lightning.errors import ConfigError, DataPathError

CACHE_VERSION = 1
_HINT = "run `hih-prepare <same overrides> data.cache_dir=<dir>` first, or unset data.cache_dir"


def cache_size(out_size: int, context: float) -> int:
    """Cache side C >= out_size * context with C - out_size even (exact eval windows)."""
    if context < 1.0:
        raise ValueError(f"cache_context must be >= 1, got {context}")
    return int(out_size + 2 * int(np.ceil(out_size * (context - 1.0) / 2)))


def cache_matrix(record: FaceRecord, protocol: str, out_size: int, size: int) -> np.ndarray:
    """Image px -> cache px: the protocol box becomes the central ``out_size`` square."""
    cx, cy, side = crop_box(record, protocol)
    return crop_matrix(cx, cy, side * size / out_size, size)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 ``outer`` after 2x3 ``inner``."""
    outer3 = np.vstack([outer, [0.0, 0.0, 1.0]])
    inner3 = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (outer3 @ inner3)[:2]


class _CropJob(Dataset):
    """One face -> (cache crop, matrix); run by DataLoader workers in parallel."""

    def __init__(self, source: Any, protocol: str, out_size: int, size: int) -> None:
        self.source, self.protocol, self.out_size, self.size = source, protocol, out_size, size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        record = self.source.record(index)
        image = self.source.load_image(index)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        matrix = cache_matrix(record, self.protocol, self.out_size, self.size)
        crop = warp_image(np.ascontiguousarray(image[:, :, :3]), matrix, self.size)
        return crop, matrix


def write_cache(datamodule: Any, cache_dir: str | Path, splits: tuple[str, ...] | None = None,
                num_workers: int = 0) -> Path:
    """Write every (or the given) split of a BenchmarkDataModule into ``cache_dir``."""
    cache_dir = Path(cache_dir)
    out_size, protocol = int(datamodule.image_size), datamodule.crop_protocol
    size = cache_size(out_size, datamodule.cache_context)
    annotations = datamodule.layout().annotations
    order = ("train", "test", "val")  # a shared file is cached under "test", not "val"
    splits = sorted(splits or annotations, key=lambda s: order.index(s) if s in order else 3)
    counts: dict[str, int] = {}
    written: dict[object, str] = {}  # source key -> the split cached from it
    for split in splits:
        key = datamodule.source_key(split)
        if key in written:  # e.g. val = test: cache the faces once
            continue
        written[key] = split
        source = datamodule.source(split)
        n, records = len(source), [source.record(i) for i in range(len(source))]
        split_dir = cache_dir / split
        split_dir.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(split_dir / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(n, size, size, 3))
        matrices = np.zeros((n, 2, 3), dtype=np.float64)
        loader = DataLoader(_CropJob(source, protocol, out_size, size), batch_size=None,
                            num_workers=num_workers)
        start = time.perf_counter()
        for i, (crop, matrix) in enumerate(loader):
            images[i] = crop.numpy() if isinstance(crop, torch.Tensor) else crop
            matrices[i] = matrix.numpy() if isinstance(matrix, torch.Tensor) else matrix
        images.flush()
        del images
        width = max((r.attributes.size for r in records), default=0)
        attributes = np.zeros((n, width), dtype=np.int64)
        visible = np.ones((n, datamodule.meta.num_landmarks), dtype=bool)
        for i, r in enumerate(records):
            attributes[i, : r.attributes.size] = r.attributes
            if r.visible is not None:
                visible[i] = r.visible
        np.savez(split_dir / "labels.npz",
                 landmarks=np.stack([r.landmarks for r in records]), matrix=matrices,
                 attributes=attributes, visible=visible,
                 has_visible=np.array([r.visible is not None for r in records]),
                 sources=np.array([r.source for r in records]))
        counts[split] = n
        skipped = len(getattr(datamodule, "skipped_images", {}).get(split, []))
        print(f"hih-prepare: {split}: {n} faces -> {split_dir} "
              f"({time.perf_counter() - start:.1f} s)"
              + (f"; {skipped} left out for a bad image" if skipped else ""), flush=True)
    keys = {split: datamodule.source_key(split) for split in annotations}
    aliases = {split: written[key] for split, key in keys.items()
               if key in written and written[key] != split}
    info = {"version": CACHE_VERSION, "dataset": datamodule.meta.name, "crop_protocol": protocol,
            "image_size": out_size, "context": datamodule.cache_context, "size": size,
            "splits": counts, "aliases": aliases}
    if getattr(datamodule, "skipped_images", None):  # data.bad_images=skip
        info["skipped_images"] = datamodule.skipped_images
    (cache_dir / "cache.json").write_text(json.dumps(info, indent=2))
    return cache_dir


def cache_split_dir(cache_dir: Path, split: str, info: dict[str, Any]) -> Path:
    """Folder holding a split's cache (val shares test's when they are the same file)."""
    folder = Path(cache_dir) / info.get("aliases", {}).get(split, split)
    for name in ("images.npy", "labels.npz"):
        if not (folder / name).is_file():
            raise DataPathError(f"data.cache_dir: expected file {folder / name} for the "
                                f"{split!r} split ({_HINT})")
    return folder


def check_cache(cache_dir: Path, datamodule: Any) -> dict[str, Any]:
    """Fail fast when the cache is missing or was made for another dataset/protocol/size.

    A partial cache is fine (e.g. only ``test`` for hih-eval): a split's files are required
    by :func:`cache_split_dir` when that split is set up.
    """
    info_path = Path(cache_dir) / "cache.json"
    if not info_path.is_file():
        raise DataPathError(f"data.cache_dir: expected file {info_path} ({_HINT})")
    info = json.loads(info_path.read_text())
    wanted = {"dataset": datamodule.meta.name, "crop_protocol": datamodule.crop_protocol,
              "image_size": int(datamodule.image_size), "version": CACHE_VERSION}
    wrong = {k: (info.get(k), v) for k, v in wanted.items() if info.get(k) != v}
    if wrong:
        detail = ", ".join(f"{k}: cache {a!r} vs config {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(f"data.cache_dir={cache_dir} was made for other settings ({detail}); "
                         f"{_HINT}")
    return info  # each split's files are checked when its stage is set up


class CachedSource:
    """A FaceSource over one cached split: records in cache px, images from a memory map."""

    def __init__(self, split_dir: Path, out_size: int) -> None:
        self.split_dir, self.out_size = Path(split_dir), int(out_size)
        labels = np.load(self.split_dir / "labels.npz")
        self.landmarks, self.matrix = labels["landmarks"], labels["matrix"]
        self.attributes, self.visible = labels["attributes"], labels["visible"]
        self.has_visible, self.sources = labels["has_visible"], labels["sources"]
        self._images: np.ndarray | None = None
        self.size = int(np.load(self.split_dir / "images.npy", mmap_mode="r").shape[1])

    def __getstate__(self) -> dict[str, Any]:  # spawned workers reopen the memory map
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.landmarks)

    def record(self, index: int) -> FaceRecord:
        centre = (self.size - 1) / 2.0  # the protocol box: out_size px, centred in the cache
        return FaceRecord(
            image_path=None,
            landmarks=apply_to_landmarks(self.matrix[index], self.landmarks[index]),
            center=np.array([centre, centre]), scale=self.out_size / 200.0,
            attributes=self.attributes[index].copy(),
            visible=self.visible[index].copy() if self.has_visible[index] else None,
            source=f"{self.split_dir}[{index}] <- {self.sources[index]}")

    def load_image(self, index: int) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.split_dir / "images.npy", mmap_mode="r")
        return np.asarray(self._images[index])


class CachedFaceDataset(FaceDataset):
    """FaceDataset over a CachedSource: matrices and ground truth back in original-image px."""

    def __getitem__(self, key: int) -> dict[str, Any]:
        sample = super().__getitem__(key)
        index = sample["index"]
        source: CachedSource = self.source  # type: ignore[assignment]
        sample["matrix"] = torch.from_numpy(
            compose_affine(sample["matrix"].numpy(), source.matrix[index]))
        sample["landmarks_image"] = torch.from_numpy(source.landmarks[index].astype(np.float64))
        return sample


def main(argv: list[str] | None = None) -> None:
    """``hih-prepare <hydra overrides>``: same overrides as hih-train plus data.cache_dir."""
    from hih_lightning.run_folder import user_errors

    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print(PREPARE_HELP)
        return
    with user_errors("hih-prepare", None):
        _prepare(overrides)


PREPARE_HELP = """hih-prepare: decode and crop every face of a benchmark once into
data.cache_dir, so training reads small fixed-size arrays instead of decoding full-size
JPEGs each epoch.
Takes the same overrides as hih-train (data=..., experiment=...) plus data.cache_dir.

Main options:
  data=wflw|300w|cofw   data.root=<benchmark folder> (or paths.data_dir=<folder holding it>)
  data.cache_dir=<folder to write>   data.cache_context=1.25   data.num_workers=N

Example:
  hih-prepare data=wflw data.root=/data/WFLW data.cache_dir=/fast/wflw_cache
  hih-train experiment=wflw_hih_b data.cache_dir=/fast/wflw_cache"""


def _prepare(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from hih_lightning.config import CONFIG_DIR, check_ranges, check_required, instantiate_node

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    check_required(cfg)
    check_ranges(cfg)
    cache_dir = cfg.data.get("cache_dir")
    if not cache_dir:
        raise ConfigError("data.cache_dir: a value is required (data.cache_dir=<folder to "
                          "write the cache to>)")
    # instantiate_node: a missing benchmark file is its own one line, not Hydra's wrapper
    datamodule = instantiate_node(cfg, "data", cache_dir=None)
    if not hasattr(datamodule, "layout"):
        raise ConfigError(f"data: {cfg.data._target_} has nothing to cache (it reads no "
                          "image files)")
    write_cache(datamodule, cache_dir, num_workers=int(cfg.data.get("num_workers", 0)))


if __name__ == "__main__":
    main()
