"""Resumable, deterministic epoch sampler yielding virtual sample indices.

Determinism contract (the trainer relies on it for exact resume):

* Epoch ``e`` visits the slots ``0 .. N*r - 1`` (``N`` images, enlarge ratio ``r``) in a
  permutation drawn from a ``torch.Generator`` seeded by ``(seed, e)`` only.
* A slot ``s`` is yielded as the *virtual index* ``v = e * N * r + s``. Datasets read image
  ``v % N`` and draw every random augmentation from ``numpy.random.default_rng((seed, v))``.
  A sample is therefore a pure function of ``(seed, v)``: the number of workers, their
  scheduling, or a restart in the middle of an epoch cannot change it.
* ``set_start(k)`` skips this rank's first ``k`` indices of the current epoch, so a run
  resumed after ``k`` samples sees exactly the remaining samples of the uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "derive_seed"]


def derive_seed(*values: int) -> int:
    """A 63-bit seed mixing non-negative integers (no collisions like ``seed + epoch``)."""
    state = np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class EpochSampler(Sampler[int]):
    """Per-epoch shuffled, rank-split sampler with mid-epoch resume.

    Args:
        dataset_size: number of distinct samples ``N`` in the dataset.
        num_replicas: number of data-parallel processes (world size).
        rank: index of this process in ``[0, num_replicas)``.
        shuffle: permute the slots each epoch (else they come in order).
        seed: non-negative seed shared by all ranks.
        enlarge_ratio: an epoch visits every sample this many times (BasicSR's
            ``dataset_enlarge_ratio``), each visit with its own augmentation.

    Like ``DistributedSampler`` the slot list is padded by repeating its head to a multiple of
    ``num_replicas``, and rank ``r`` takes every ``num_replicas``-th slot starting at ``r``.
    ``len(sampler)`` is the per-rank count of one full epoch.
    """

    def __init__(
        self,
        dataset_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        enlarge_ratio: int = 1,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError(f"EpochSampler: dataset_size must be positive, got {dataset_size}.")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"EpochSampler: need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                f"num_replicas={num_replicas}, rank={rank}."
            )
        if int(enlarge_ratio) != enlarge_ratio or enlarge_ratio < 1:
            raise ValueError(
                f"EpochSampler: enlarge_ratio must be a positive integer, got {enlarge_ratio!r}."
            )
        if seed < 0:
            raise ValueError(f"EpochSampler: seed must be non-negative, got {seed}.")
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.enlarge_ratio = int(enlarge_ratio)
        self.slots_per_epoch = dataset_size * self.enlarge_ratio
        self.num_samples = math.ceil(self.slots_per_epoch / num_replicas)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; also resets ``set_start`` to 0."""
        if epoch < 0:
            raise ValueError(f"EpochSampler.set_epoch: epoch must be >= 0, got {epoch}.")
        self.epoch = epoch
        self.start = 0

    def set_start(self, num_samples_to_skip: int) -> None:
        """Skip this rank's first ``num_samples_to_skip`` indices of the current epoch."""
        if not 0 <= num_samples_to_skip <= self.num_samples:
            raise ValueError(
                f"EpochSampler.set_start: can skip 0..{self.num_samples} samples of an epoch on "
                f"this rank, got {num_samples_to_skip}."
            )
        self.start = num_samples_to_skip

    def seek(self, iteration: int, batch_size: int, drop_last: bool = True) -> int:
        """Position the sampler after ``iteration`` batches of ``batch_size``; returns the epoch.

        For resuming: ``epoch = sampler.seek(current_iter, batch_size)``, iterate the loader to
        finish that epoch, then call ``set_epoch(epoch + 1)`` and so on.
        """
        if batch_size < 1 or iteration < 0:
            raise ValueError(
                f"EpochSampler.seek: need iteration >= 0 and batch_size >= 1, got "
                f"iteration={iteration}, batch_size={batch_size}."
            )
        if drop_last:
            iters_per_epoch = self.num_samples // batch_size
        else:
            iters_per_epoch = math.ceil(self.num_samples / batch_size)
        if iters_per_epoch == 0:
            raise ValueError(
                f"EpochSampler.seek: batch_size {batch_size} is larger than the "
                f"{self.num_samples} samples per epoch on this rank."
            )
        epoch, iters_done = divmod(iteration, iters_per_epoch)
        self.set_epoch(epoch)
        self.set_start(iters_done * batch_size)
        return epoch

    def epoch_indices(self, epoch: int) -> list[int]:
        """All virtual indices of ``epoch`` for this rank, ignoring ``set_start``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            slots = torch.randperm(self.slots_per_epoch, generator=generator).tolist()
        else:
            slots = list(range(self.slots_per_epoch))
        total = self.num_samples * self.num_replicas
        while len(slots) < total:  # pad by repeating the head (several times if N < replicas)
            slots += slots[: total - len(slots)]
        offset = epoch * self.slots_per_epoch
        return [offset + s for s in slots[self.rank : total : self.num_replicas]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices(self.epoch)[self.start :])

    def __len__(self) -> int:
        return self.num_samples
