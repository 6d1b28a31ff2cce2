"""DataModules: one shared base (crop + augment + batch) and a thin subclass per benchmark."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hih_lightning.data.integrity import image_damage
from hih_lightning.data.metainfo import DatasetMeta, get_meta
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.sampling import EpochKeySampler, split_key
from hih_lightning.data.transforms import AugmentConfig, CropProtocol, FaceTransform
from hih_lightning.errors import ImageDecodeError

log = logging.getLogger(__name__)


class FaceSource(Protocol):
    """Anything that can list faces and load their images (files, a .mat, a renderer)."""

    def __len__(self) -> int: ...

    def record(self, index: int) -> FaceRecord: ...

    def load_image(self, index: int) -> np.ndarray: ...


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8, naming the file when it is missing, truncated, corrupt
    or not an image. A truncated JPEG decodes without an error in OpenCV (grey rows), so the
    bytes are checked first (:func:`~hih_lightning.data.integrity.image_damage`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: image missing") from None
    except OSError as err:
        raise ImageDecodeError(f"{path}: image unreadable ({err.strerror or err})") from None
    damage = image_damage(data)
    if damage is not None:
        raise ImageDecodeError(f"{path}: {damage}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"{path}: not an image OpenCV can decode (unreadable or corrupt)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class RecordSource:
    """Faces read from annotation files; images from disk, or in memory (COFW's .mat)."""

    def __init__(self, records: list[FaceRecord], images: list[np.ndarray] | None = None):
        self.records, self.images = records, images

    def __len__(self) -> int:
        return len(self.records)

    def record(self, index: int) -> FaceRecord:
        return self.records[index]

    def load_image(self, index: int) -> np.ndarray:
        if self.images is not None:
            return self.images[index]
        record = self.records[index]
        if record.image_path is None:
            raise ImageDecodeError(f"{record.source}: record has no image path")
        return read_rgb(record.image_path)


class FaceDataset(Dataset):
    """Crop + augment one face per sampler key; augmentation seeded by (seed, epoch, index)."""

    def __init__(self, source: FaceSource, transform: FaceTransform, meta: DatasetMeta,
                 seed: int = 0) -> None:
        self.source, self.transform, self.meta, self.seed = source, transform, meta, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = split_key(key, len(self.source))
        record = self.source.record(index)
        image = self.source.load_image(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        sample = self.transform(image, record, rng)
        num_attr = len(self.meta.subsets)
        attributes = np.zeros(num_attr, dtype=np.int64)
        attributes[: len(record.attributes)] = record.attributes[:num_attr]
        visible = sample.get("visible", np.ones(len(record.landmarks), dtype=bool))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1))),
            "landmarks": torch.from_numpy(sample["landmarks"].astype(np.float32)),
            "landmarks_image": torch.from_numpy(record.landmarks.astype(np.float64)),
            "matrix": torch.from_numpy(sample["matrix"].astype(np.float64)),
            "attributes": torch.from_numpy(attributes),
            "visible": torch.from_numpy(visible),
            "index": index,
        }


class FaceDataModule(L.LightningDataModule):
    """The shared base: subclasses only say where the faces of each split come from."""

    def __init__(self, dataset: str, num_landmarks: int, image_size: int = 256,
                 batch_size: int = 16, eval_batch_size: int | None = None,
                 num_workers: int = 4, seed: int = 0, crop_protocol: CropProtocol = "gt_box",
                 augment: dict[str, Any] | None = None, pin_memory: bool = False) -> None:
        super().__init__()
        self.meta = get_meta(dataset)
        if num_landmarks != self.meta.num_landmarks:
            raise ValueError(f"data.num_landmarks={num_landmarks} but dataset {dataset!r} has "
                             f"{self.meta.num_landmarks} landmarks")
        self.image_size, self.seed = image_size, seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.crop_protocol = crop_protocol
        self.augment = AugmentConfig(**(augment or {}))
        self.datasets: dict[str, FaceDataset] = {}
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def sources(self, stage: str | None) -> dict[str, FaceSource]:
        """Split name ("train", "val", "test") -> faces; subclasses implement this."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        for split, source in self.sources(stage).items():
            augment = self.augment if split == "train" else AugmentConfig(enabled=False)
            transform = FaceTransform(protocol=self.crop_protocol, out_size=self.image_size,
                                      augment=augment, flip_map=self.meta.flip_map)
            self.datasets[split] = FaceDataset(source, transform, self.meta, self.seed)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: no {split!r} split was set up")
        dataset = self.datasets[split]
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        sampler = EpochKeySampler(len(dataset), shuffle=train, seed=self.seed, rank=rank,
                                  world_size=world, pad=train)
        if train and self._resume is not None:
            epoch, batches_done = self._resume
            sampler.resume_at(epoch, batches_done * self.batch_size)
            self._resume = None
        return DataLoader(dataset, batch_size=self.batch_size if train else self.eval_batch_size,
                          sampler=sampler, num_workers=self.num_workers, drop_last=train,
                          pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def state_dict(self) -> dict[str, int]:
        """Where training stands in its data: the epoch and how many of its batches the
        weights have seen (at the end of an epoch: the next epoch, none). A checkpoint holds
        it, so that a resumed run's first loader draws exactly the batches the killed run
        would have drawn next (:meth:`~hih_lightning.data.sampling.EpochKeySampler.resume_at`)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        epoch = trainer.current_epoch
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        return {"train_epoch": epoch, "train_batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_epoch" in state_dict:
            self._resume = (int(state_dict["train_epoch"]), int(state_dict["train_batches_done"]))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class SyntheticDataModule(FaceDataModule):
    """The embedded default: rendered faces, disjoint seeds per split, nothing to download."""

    def __init__(self, train_size: int = 4000, val_size: int = 300, test_size: int = 500,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    def sources(self, stage: str | None) -> dict[str, FaceSource]:
        from hih_lightning.data.synthetic import SyntheticFaces

        # Each split renders from its own seed stream, so no face appears in two splits; the
        # evaluation faces do not depend on the run's seed, so seeds compare on the same set.
        seeds = {"train": self.seed, "val": 1_000_003, "test": 2_000_003}
        return {split: SyntheticFaces(size, image_size=self.image_size, seed=seeds[split])
                for split, size in self.sizes.items() if size > 0}

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self._read_again(split):
            self._render_once(split)
        return super()._loader(split, train)

    def _read_again(self, split: str) -> bool:
        """Whether the loader will read the split's faces more than once: training of several
        epochs reads train and val every epoch; a test, a fast_dev_run or a limited run reads
        them once, and rendering first would only delay it. Without a trainer (a script
        iterating the loaders) every split counts as read again."""
        trainer = self.trainer
        if trainer is None:
            return True
        if split not in ("train", "val") or trainer.state.fn != "fit" or trainer.fast_dev_run:
            return False
        limit = trainer.limit_train_batches if split == "train" else trainer.limit_val_batches
        return isinstance(limit, float) and limit == 1.0 and trainer.max_epochs != 1

    def _render_once(self, split: str) -> None:
        """Replace the split's renderer by its rendered faces before its first loader.

        A face renders to the same pixels every epoch (its streams are seeded by its index),
        and rendering (~8 ms a face at 128 px) was most of the loader's work: on 2 cores the
        loader workers took that time from training. Rendering each face once, with the
        loader's workers, leaves them only the augmentation. The crops are unchanged.
        """
        from hih_lightning.data.synthetic import SyntheticFaces

        dataset = self.datasets.get(split)
        if dataset is None or not isinstance(dataset.source, SyntheticFaces):
            return
        start = time.perf_counter()
        faces = DataLoader(_RenderFaces(dataset.source), batch_size=None, collate_fn=_as_is,
                           num_workers=self.num_workers)
        records, images = zip(*faces, strict=True) if len(faces) else ((), ())
        dataset.source = RecordSource(list(records), list(images))
        log.info("%s split: rendered %d synthetic faces in %.1f s", split, len(records),
                 time.perf_counter() - start)


class _RenderFaces(Dataset):
    """(record, image) of each synthetic face, so the loader's workers render them."""

    def __init__(self, faces: FaceSource) -> None:
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[FaceRecord, np.ndarray]:
        return self.faces.record(index), self.faces.load_image(index)


def _as_is(sample: Any) -> Any:
    return sample
