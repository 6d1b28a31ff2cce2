"""Epoch-keyed sampling: the same (seed, epoch, index) gives the same sample everywhere.

Lightning calls ``set_epoch`` on a loader's sampler before each epoch. Our sampler then emits
keys ``epoch * len(dataset) + index`` so a dataset can seed its augmentation from
(seed, epoch, index) alone: independent of worker count and order, and identical after a
resume (which neither the global RNG nor per-worker seeds guarantee). It also shards across
processes itself: training pads each shard to equal length (DDP needs equal step counts);
evaluation never pads, so no sample is counted twice.

A resumed run places the sampler with :meth:`EpochKeySampler.resume_at` before its loader's
first iterator exists. ``set_epoch`` alone is not enough there: Lightning makes the resumed
run's first iterator before it calls ``set_epoch``, and a loader with workers draws its first
indices as soon as the iterator exists, so they came from epoch 0's order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochKeySampler(Sampler[int]):
    def __init__(self, num_samples: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad: bool = True) -> None:
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self.skip = 0  # samples of this epoch's shard a killed run already trained on

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        """Iterate ``epoch`` from its ``skip``-th sample of this rank's shard on, until the
        next epoch. ``len`` stays the whole epoch's: Lightning counts the skipped batches as
        done (it restores its batch counter from the checkpoint)."""
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return np.arange(self.num_samples)

    def __len__(self) -> int:
        if self.pad:
            return -(-self.num_samples // self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def __iter__(self) -> Iterator[int]:
        epoch, order = self.epoch, self._indices()
        if self.pad and self.world_size > 1:
            order = np.resize(order, len(self) * self.world_size)  # wraps around, like DDP
        for index in order[self.rank::self.world_size][self.skip:]:
            yield int(epoch * self.num_samples + index)


def split_key(key: int, num_samples: int) -> tuple[int, int]:
    """(epoch, index) from a sampler key."""
    return divmod(int(key), num_samples)
