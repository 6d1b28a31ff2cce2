"""The official benchmarks as thin FaceDataModule subclasses: point ``root`` at a download.

Each module knows its benchmark's official file layout, checks it in ``__init__`` (so a wrong
``data.root`` fails before any model is built, naming the file it expected where), reads the
annotation files with :mod:`hih_lightning.data.formats` in ``setup`` and hands the base class
one :class:`~hih_lightning.data.datamodules.FaceSource` per split.

Splits. Official benchmarks have no validation split; like the community code (HRNet, PIPNet,
STAR, the HIH release) validation defaults to the test set. The checkpoint the test then
scores is therefore chosen on the test set (as in those papers); set ``val_list`` /
``val_split`` / ``val`` to a held-out file for an unbiased choice.

Offline cache (``cache_dir``): written once by ``hih-prepare`` (:mod:`hih_lightning.prepare`);
when set, every split is read from the cache instead of the originals. See that module for
the format and what it changes.

``python -m hih_lightning.data.benchmarks check wflw <root>`` runs the layout check alone
(used by ``make reproduce-*``).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from hih_lightning.data.datamodules import FaceDataModule, FaceSource, RecordSource
from hih_lightning.data.formats import (
    AnnotationError,
    read_300w_folders,
    read_annotations,
    read_center_scale_csv,
    read_cofw_mat,
    read_wflw_list,
    read_ytf68_csv,
)
from hih_lightning.data.formats.w300 import SPLITS as W300_FOLDER_SPLITS
from hih_lightning.data.formats.ytf68 import identity_of
from hih_lightning.data.integrity import image_file_problem
from hih_lightning.data.metainfo import get_meta
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.transforms import AugmentConfig, FaceTransform
from hih_lightning.errors import DataPathError

log = logging.getLogger(__name__)

# What to do with a face whose image is missing, truncated or corrupt: stop naming the file
# (when the loader reaches it), or check every image at setup and leave such faces out,
# listing them in ``skipped_images`` (the run report and hih-prepare's cache.json count them).
BadImages = Literal["fail", "skip"]

SPLIT_NAMES = ("train", "val", "test")
STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
    None: SPLIT_NAMES,
}


def expect(path: Path, label: str, what: str, hint: str, is_dir: bool = False) -> Path:
    """Return ``path`` if it exists, else raise a DataPathError naming it and how to fix it."""
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        kind = "folder" if is_dir else "file"
        raise DataPathError(f"{label}: expected {kind} {path} ({what}) ({hint})")
    return path


@dataclass(frozen=True)
class Layout:
    """Where a benchmark's files live: {split: annotation path}, image folder, label."""

    label: str
    annotations: dict[str, Path]
    image_root: Path | None
    hint: str


class BenchmarkDataModule(FaceDataModule):
    """Shared by the benchmark modules: path checks, per-split records, the offline cache.

    Subclasses implement :meth:`layout` (checked in ``__init__``) and :meth:`read_split`.
    """

    protocols: tuple[str, ...] = ("gt_box",)  # crop protocols this layout can supply

    def __init__(self, dataset: str, num_landmarks: int | None = None,
                 cache_dir: str | Path | None = None, cache_context: float = 1.25,
                 bad_images: BadImages = "fail", **kwargs: Any) -> None:
        meta = get_meta(dataset)
        super().__init__(dataset=dataset,
                         num_landmarks=meta.num_landmarks if num_landmarks is None
                         else num_landmarks, **kwargs)
        if self.crop_protocol not in self.protocols:
            raise ValueError(f"{type(self).__name__}: crop_protocol={self.crop_protocol!r} needs "
                             f"data this layout does not have; use one of {self.protocols}")
        if bad_images not in get_args(BadImages):
            raise ValueError(f"bad_images must be one of {get_args(BadImages)}, got {bad_images!r}")
        self.bad_images = bad_images
        # split -> "image: reason" of each face dropped for its image (bad_images=skip)
        self.skipped_images: dict[str, list[str]] = {}
        self.cache_dir = None if cache_dir in (None, "") else Path(cache_dir)
        self.cache_context = float(cache_context)
        # source key -> (the faces kept, "image: reason" of those skipped for their image)
        self._records: dict[object, tuple[RecordSource, list[str]]] = {}
        if self.cache_dir is not None:
            from hih_lightning.prepare import check_cache

            self.cache_info = check_cache(self.cache_dir, self)
        else:
            self.check_layout()

    # -- what subclasses say -----------------------------------------------------------------
    def layout(self) -> Layout:
        raise NotImplementedError

    def read_split(self, split: str, path: Path) -> RecordSource:
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------------------
    def check_layout(self) -> Layout:
        """Fail fast: every annotation file and the image folder must exist."""
        lay = self.layout()
        for split, path in lay.annotations.items():
            expect(path, lay.label, f"{split} annotations", lay.hint, is_dir=path.suffix == "")
        if lay.image_root is not None:
            expect(lay.image_root, lay.label, "images", lay.hint, is_dir=True)
        return lay

    def source_key(self, split: str) -> object:
        """Identifies a split's faces: splits with equal keys (val = test) share one read."""
        return self.layout().annotations[split]

    def source(self, split: str) -> RecordSource:
        """The original faces of one split, read once and kept (setup runs per stage). The
        faces left out for a bad image count under every split that reads them: val and test
        share one read when they name the same file, and both lose the same faces."""
        key = self.source_key(split)
        if key not in self._records:
            lay = self.layout()
            if split not in lay.annotations:
                raise RuntimeError(f"{lay.label}: no {split!r} split is configured")
            src, skipped = self.read_split(split, lay.annotations[split]), []
            if self.bad_images == "skip" and src.images is None:
                src, skipped = self._drop_bad_images(src)
            if len(src) == 0:
                raise DataPathError(f"{lay.label}: {lay.annotations[split]} lists no faces")
            first = src.record(0).image_path
            if src.images is None and first is not None and not Path(first).is_file():
                raise DataPathError(f"{lay.label}: expected image {first} (listed in "
                                    f"{src.record(0).source}) ({lay.hint})")
            self._records[key] = src, skipped
        src, skipped = self._records[key]
        if skipped and split not in self.skipped_images:
            self.skipped_images[split] = skipped
            log.warning("%s split: skipped %d face(s) whose image is bad (bad_images=skip), "
                        "e.g. %s", split, len(skipped), skipped[0])
        return src

    @staticmethod
    def _drop_bad_images(src: RecordSource) -> tuple[RecordSource, list[str]]:
        """The faces whose image file is whole, and "image: reason" of each other one."""
        problems: dict[Path, str | None] = {}
        kept, skipped = [], []
        for record in src.records:
            path = record.image_path
            if path is not None and path not in problems:
                problems[path] = image_file_problem(path)
            problem = None if path is None else problems[path]
            if problem is None:
                kept.append(record)
            else:
                skipped.append(f"{path}: {problem} (face {record.source})")
        return RecordSource(kept), skipped

    def sources(self, stage: str | None) -> dict[str, FaceSource]:
        available = self.layout().annotations
        return {split: self.source(split) for split in STAGE_SPLITS.get(stage, SPLIT_NAMES)
                if split in available}

    def setup(self, stage: str | None = None) -> None:
        if self.cache_dir is None:
            super().setup(stage)
            return
        from hih_lightning.prepare import CachedFaceDataset, CachedSource, cache_split_dir

        for split in STAGE_SPLITS.get(stage, SPLIT_NAMES):
            if split not in self.layout().annotations:
                continue
            src = CachedSource(cache_split_dir(self.cache_dir, split, self.cache_info),
                               self.image_size)
            augment = self.augment if split == "train" else AugmentConfig(enabled=False)
            # the cached crop holds the protocol box as its central image_size square
            transform = FaceTransform(protocol="center_scale", out_size=self.image_size,
                                      augment=augment, flip_map=self.meta.flip_map, factor=1.0)
            self.datasets[split] = CachedFaceDataset(src, transform, self.meta, self.seed)


def _hint(folder: str) -> str:
    return f"set data.root=<folder> or DATA_DIR=<folder holding {folder}/>"


class WFLWDataModule(BenchmarkDataModule):
    """WFLW (98 points) from the official download: annotation lists + ``WFLW_images/``.

    ``root`` holds ``WFLW_annotations/`` and ``WFLW_images/`` as unpacked from the official
    archives. Attributes (pose, expression, illumination, make-up, occlusion, blur) come from
    the list's 6 flags, so one test run reports the full set and the six subsets.
    """

    protocols = ("gt_box", "dataset_box")
    LIST_DIR = "WFLW_annotations/list_98pt_rect_attr_train_test"

    def __init__(self, root: str | Path,
                 train_list: str = f"{LIST_DIR}/list_98pt_rect_attr_train.txt",
                 test_list: str = f"{LIST_DIR}/list_98pt_rect_attr_test.txt",
                 val_list: str | None = None, image_dir: str = "WFLW_images",
                 dataset: str = "wflw", **kwargs: Any) -> None:
        self.root = Path(root)
        self.lists = {"train": train_list, "val": val_list or test_list, "test": test_list}
        self.image_dir = image_dir
        super().__init__(dataset=dataset, **kwargs)

    def layout(self) -> Layout:
        return Layout("WFLW", {s: self.root / p for s, p in self.lists.items() if p},
                      self.root / self.image_dir, _hint("WFLW"))

    def read_split(self, split: str, path: Path) -> RecordSource:
        return RecordSource(read_wflw_list(path, image_root=self.root / self.image_dir))


class W300DataModule(BenchmarkDataModule):
    """300-W (68 points) in the iBUG folder layout or as HRNet's CSVs.

    ``layout="folders"``: ``root`` holds afw/, helen/{trainset,testset}/, lfpw/{trainset,
    testset}/, ibug/ (and 300W/01_Indoor, 02_Outdoor for ``private``), each ``.pts`` beside its
    image; train = afw + helen/trainset + lfpw/trainset. ``layout="csv"``: ``csv_dir`` (default
    ``root``) holds ``face_landmarks_300w_{train,valid,valid_common,valid_challenge,test}.csv``
    and ``image_root`` (default ``root/images``) the images they name; ``center_scale`` crops
    are available there. ``test_split``: full (689), common (554), challenging (135) or
    private (600). Records carry (common, challenging) flags, so testing ``full`` reports all
    three numbers from one run.
    """

    CSV_FILES = {"train": "face_landmarks_300w_train.csv", "full": "face_landmarks_300w_valid.csv",
                 "common": "face_landmarks_300w_valid_common.csv",
                 "challenging": "face_landmarks_300w_valid_challenge.csv",
                 "private": "face_landmarks_300w_test.csv"}
    TEST_SPLITS = ("full", "common", "challenging", "private")

    def __init__(self, root: str | Path, layout: str = "folders", test_split: str = "full",
                 val_split: str | None = None, csv_dir: str | Path | None = None,
                 image_root: str | Path | None = None, dataset: str = "300w",
                 **kwargs: Any) -> None:
        if layout not in ("folders", "csv"):
            raise ValueError(f"300W: layout must be 'folders' or 'csv', got {layout!r}")
        for name, value in (("test_split", test_split), ("val_split", val_split or test_split)):
            if value not in self.TEST_SPLITS:
                raise ValueError(f"300W: {name}={value!r}; valid: {self.TEST_SPLITS}")
        self.root, self.layout_kind = Path(root), layout
        self.splits = {"train": "train", "val": val_split or test_split, "test": test_split}
        self.csv_dir = Path(csv_dir) if csv_dir else self.root
        self.image_root = Path(image_root) if image_root else (
            self.root / "images" if layout == "csv" else self.root)
        super().__init__(dataset=dataset, **kwargs)

    @property
    def protocols(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("gt_box", "center_scale") if self.layout_kind == "csv" else ("gt_box",)

    def layout(self) -> Layout:
        hint = _hint("300W")
        if self.layout_kind == "csv":
            return Layout("300W", {s: self.csv_dir / self.CSV_FILES[name]
                                   for s, name in self.splits.items()}, self.image_root, hint)
        # folders: check the first folder of each split (the reader checks the others)
        annotations = {}
        for split, name in self.splits.items():
            folder = W300_FOLDER_SPLITS[name][0][0]
            base = self.root
            if name == "private" and not (base / folder).is_dir():
                base = self.root / "300W"
            annotations[split] = base / folder
        return Layout("300W", annotations, None, hint)

    def source_key(self, split: str) -> object:
        return (self.layout_kind, self.splits[split])  # folders: the split name, not a path

    def check_layout(self) -> Layout:
        lay = super().check_layout()
        if self.layout_kind == "folders":
            for split, name in self.splits.items():
                for folder, _ in W300_FOLDER_SPLITS[name]:
                    path = self.root / folder
                    if name == "private" and not path.is_dir():
                        path = self.root / "300W" / folder
                    expect(path, "300W", f"{split} split {name!r}", lay.hint, is_dir=True)
        return lay

    def read_split(self, split: str, path: Path) -> RecordSource:
        if self.layout_kind == "csv":
            return RecordSource(read_center_scale_csv(path, image_root=self.image_root))
        return RecordSource(read_300w_folders(self.root, self.splits[split]))


class COFWDataModule(BenchmarkDataModule):
    """COFW (29 points) from the official ``COFW_{train,test}_color.mat`` (images inside).

    The images are decoded into memory once (1,345 + 507 faces, ~0.4 GB); data-loader workers
    share them through fork. Attribute ``occluded`` = any landmark occluded.
    """

    protocols = ("gt_box", "dataset_box")

    def __init__(self, root: str | Path, train_file: str = "COFW_train_color.mat",
                 test_file: str = "COFW_test_color.mat", val_file: str | None = None,
                 dataset: str = "cofw", **kwargs: Any) -> None:
        self.root = Path(root)
        self.files = {"train": train_file, "val": val_file or test_file, "test": test_file}
        super().__init__(dataset=dataset, **kwargs)

    def layout(self) -> Layout:
        return Layout("COFW", {s: self.root / f for s, f in self.files.items()}, None,
                      _hint("COFW"))

    def read_split(self, split: str, path: Path) -> RecordSource:
        # the official files name their arrays after the split they hold, not our split name
        mat_split = "train" if self.files[split] == self.files["train"] else "test"
        try:
            return RecordSource(*read_cofw_mat(path, split=mat_split))
        except AnnotationError:  # e.g. a train file given as val: try the other key set
            other = "test" if mat_split == "train" else "train"
            return RecordSource(*read_cofw_mat(path, split=other))


class FileListDataModule(BenchmarkDataModule):
    """Any dataset in metainfo from per-split annotation files of one readable format.

    ``fmt`` names a reader in :data:`hih_lightning.data.formats.READERS`; ``precropped`` (the
    HIH authors' processed layout: square crops + normalised coordinates) and ``coco`` (mmpose
    keypoint JSON) are the intended uses. ``image_root`` (default: the folder of each
    annotation file) resolves image names. ``reader_kwargs`` go to the reader (e.g.
    ``one_based: true`` for mmpose's 300W JSON, ``crop_size`` for precropped lists). On
    pre-cropped images the ``gt_box`` protocol re-finds the authors' 1.2x box, i.e. it is
    (close to) the identity crop, and metrics are in crop pixels of those images.
    """

    protocols = ("gt_box", "dataset_box", "center_scale")

    def __init__(self, dataset: str, train: str | None = None, val: str | None = None,
                 test: str | None = None, fmt: str = "coco",
                 image_root: str | Path | None = None,
                 reader_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if fmt == "cofw_mat":
            raise ValueError("FileListDataModule: use COFWDataModule (data=cofw) for .mat files")
        self.files = {s: Path(p) for s, p in (("train", train), ("val", val or test),
                                              ("test", test)) if p}
        if not self.files:
            raise ValueError("FileListDataModule: give at least one of train=, val=, test=")
        self.fmt, self.reader_kwargs = fmt, dict(reader_kwargs or {})
        self.image_root = None if image_root in (None, "") else Path(image_root)
        super().__init__(dataset=dataset, **kwargs)

    def layout(self) -> Layout:
        return Layout(f"{self.meta.name} ({self.fmt} list)", self.files, self.image_root,
                      "set data.train=/data.val=/data.test= to existing annotation files")

    def read_split(self, split: str, path: Path) -> RecordSource:
        root = self.image_root if self.image_root is not None else path.parent
        records = read_annotations(self.fmt, path, image_root=root, **self.reader_kwargs)
        assert isinstance(records, list)
        n = self.meta.num_landmarks
        if records and records[0].landmarks.shape[0] != n:
            raise ValueError(f"{records[0].source}: {records[0].landmarks.shape[0]} landmarks, "
                             f"but dataset {self.meta.name!r} has {n}")
        width = len(self.meta.subsets)
        for rec in records:  # formats without flags: no subset membership
            if rec.attributes.size != width:
                flags = np.zeros(width, dtype=np.int64)
                flags[: min(width, rec.attributes.size)] = rec.attributes[:width]
                rec.attributes = flags
        return RecordSource(records)


def identity_bucket(identity: str) -> float:
    """A person's place in [0, 1): the first 8 bytes of the SHA-256 of the name, so a split by
    person depends only on the name, never on file order, machine or Python's hash seed."""
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class YTF68DataModule(BenchmarkDataModule):
    """The YouTube Faces 68-point set, read as distributed (no conversion step).

    ``root`` holds ``training/``, ``test/``, ``training_frames_keypoints.csv`` and
    ``test_frames_keypoints.csv`` (:mod:`hih_lightning.data.formats.ytf68`).

    ``split="identity"`` (default): the frames of both CSVs are pooled and split by person,
    so no one in test (or val) is seen in training. A person goes to test when
    ``identity_bucket(name) < test_fraction``, to val when it is below
    ``test_fraction + val_fraction``, else to train; with the defaults (0.2, 0.05) that is
    60 / 14 / 273 of the 347 people (723 / 172 / 3,327 frames). ``split="distributed"``:
    the files' own split (val = test), which shares every person between train and test:
    it measures how well a model remembers people, and a warning says so.
    """

    FILES = {"train": ("training", "training_frames_keypoints.csv"),
             "test": ("test", "test_frames_keypoints.csv")}
    SPLITS = ("identity", "distributed")

    def __init__(self, root: str | Path, split: str = "identity", test_fraction: float = 0.2,
                 val_fraction: float = 0.05, dataset: str = "ytf68", **kwargs: Any) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"ytf68: split must be one of {self.SPLITS}, got {split!r}")
        if not (0.0 < test_fraction and 0.0 <= val_fraction
                and test_fraction + val_fraction < 1.0):
            raise ValueError(f"ytf68: need 0 < test_fraction, 0 <= val_fraction and their sum "
                             f"< 1, got test_fraction={test_fraction}, val_fraction={val_fraction}")
        self.root, self.split = Path(root), split
        self.test_fraction, self.val_fraction = float(test_fraction), float(val_fraction)
        if split == "distributed":
            log.warning("ytf68: data.split=distributed shares every person between train and "
                        "test, so test NME measures memorised people; use data.split=identity "
                        "for held-out people")
        super().__init__(dataset=dataset, **kwargs)

    def layout(self) -> Layout:
        hint = ("set data.root=<folder holding training/, test/ and the two "
                "*_frames_keypoints.csv files of the YouTube Faces 68-point set>")
        files = {s: self.root / csv_name for s, (_, csv_name) in self.FILES.items()}
        annotations = {"train": files["train"], "val": files["test"], "test": files["test"]}
        if self.split == "identity":  # every split reads both files
            annotations["val"] = annotations["train"]
        return Layout("ytf68", annotations, self.root / self.FILES["train"][0], hint)

    def check_layout(self) -> Layout:
        lay = super().check_layout()
        expect(self.root / self.FILES["test"][0], lay.label, "test frames", lay.hint, is_dir=True)
        return lay

    def source_key(self, split: str) -> object:
        if self.split == "distributed":
            return ("distributed", "test" if split == "val" else split)
        return ("identity", split)

    def split_of(self, identity: str) -> str:
        """Which split a person belongs to under ``split=identity``."""
        bucket = identity_bucket(identity)
        if bucket < self.test_fraction:
            return "test"
        return "val" if bucket < self.test_fraction + self.val_fraction else "train"

    def read_file(self, name: str) -> list[FaceRecord]:
        folder, csv_name = self.FILES[name]
        return read_ytf68_csv(self.root / csv_name, image_root=self.root / folder)

    def read_split(self, split: str, path: Path) -> RecordSource:
        if self.split == "distributed":
            return RecordSource(self.read_file("test" if split == "val" else split))
        pooled = [record for name in ("train", "test") for record in self.read_file(name)]
        records = [record for record in pooled
                   if self.split_of(identity_of(record.image_path.name)) == split]
        if not records:
            people = len({identity_of(r.image_path.name) for r in pooled})
            raise DataPathError(f"ytf68: none of the {people} people in {self.root} falls in "
                                f"the {split} split (test_fraction={self.test_fraction}, "
                                f"val_fraction={self.val_fraction}); a small sample needs "
                                "larger fractions or data.split=distributed")
        # a fixed order (by file, then frame) whatever the CSVs' row order
        records.sort(key=lambda r: (r.image_path.name, r.image_path.parent.name))
        return RecordSource(records)


BENCHMARKS: dict[str, type[BenchmarkDataModule]] = {
    "wflw": WFLWDataModule, "300w": W300DataModule, "cofw": COFWDataModule,
    "ytf68": YTF68DataModule,
}

__all__ = [
    "BENCHMARKS", "COFWDataModule", "DataPathError", "FileListDataModule", "W300DataModule",
    "WFLWDataModule", "YTF68DataModule", "check_root", "identity_bucket",
]


def check_root(benchmark: str, root: str | Path, **kwargs: Any) -> None:
    """Check a benchmark folder's layout without reading anything (``make reproduce-*``)."""
    BENCHMARKS[benchmark.lower()](root=root, **kwargs)


def _main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "check" or argv[1].lower() not in BENCHMARKS:
        print(f"usage: python -m hih_lightning.data.benchmarks check "
              f"{{{','.join(BENCHMARKS)}}} <root> [key=value ...]", file=sys.stderr)
        return 2
    extra = dict(arg.split("=", 1) for arg in argv[3:])
    try:
        check_root(argv[1], argv[2], **extra)
    except (DataPathError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{argv[1]}: layout under {argv[2]} looks complete")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
