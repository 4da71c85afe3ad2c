"""Restormer's progressive patch training: smaller batches of larger patches as training goes on.

Option keys of the train dataset (Restormer, MB-TaylorFormer; see docs/data.md)::

    batch_size_per_gpu: 8               # what the loader delivers ...
    gt_size: 384                        # ... at this (largest) patch size
    mini_batch_sizes: [8, 5, 4, 2, 1, 1]
    iters: [92000, 64000, 48000, 36000, 36000, 24000]
    gt_sizes: [128, 160, 192, 256, 320, 384]

Iteration ``i`` (1-based) belongs to the first phase ``j`` whose cumulative ``iters`` sum is
``>= i`` (the last phase past the end). As in Restormer's train.py, each loaded batch is then
reduced to ``mini_batch_sizes[j]`` samples drawn without replacement (when fewer than the batch)
and cropped to ``gt_sizes[j]`` at one random offset shared by the batch (when smaller than
``gt_size``), the offset being ``floor((gt_size - gt_sizes[j]) * u)`` with ``u`` uniform in
[0, 1) per axis. At ``scale`` > 1 the GT patch is ``gt_sizes[j]`` and the LQ patch
``gt_sizes[j] / scale`` at the same place (Restormer's code, written for scale 1, would index
the LQ patch with GT sizes).

Restormer draws from Python's global ``random``; here the draws of iteration ``i`` come from
``numpy.random.default_rng((manual_seed, rank, i))``, so a resumed run crops exactly as an
uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ProgressiveKeys", "ProgressiveSchedule", "progressive_schedule"]

logger = logging.getLogger("diffsr")

KEYS = ("mini_batch_sizes", "iters", "gt_sizes")


def _check_int_list(key: str, value: Any) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"option {key!r} must be a non-empty list of integers, got {value!r}.")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"option {key!r} must hold integers >= 1, got {value!r}.")


@dataclass(kw_only=True)
class ProgressiveKeys:
    """The progressive-training keys of a train dataset block (all three or none)."""

    mini_batch_sizes: list[int] | None = None
    iters: list[int] | None = None
    gt_sizes: list[int] | None = None

    def check_progressive(self, phase: str, gt_size: int | None, scale: int) -> None:
        """Validate the keys against the dataset's ``phase``, ``gt_size`` and ``scale``."""
        given = [key for key in KEYS if getattr(self, key) is not None]
        if not given:
            return
        if phase != "train":
            raise ValueError(
                f"{', '.join(given)}: progressive training keys belong to the train dataset, "
                f"not to a {phase} set; remove them there."
            )
        if len(given) != len(KEYS):
            missing = [key for key in KEYS if key not in given]
            raise ValueError(
                f"progressive training needs {', '.join(KEYS)} together; {', '.join(missing)} "
                f"missing."
            )
        for key in KEYS:
            _check_int_list(key, getattr(self, key))
        lengths = {key: len(getattr(self, key)) for key in KEYS}
        if len(set(lengths.values())) != 1:
            raise ValueError(
                f"mini_batch_sizes, iters and gt_sizes need one entry per phase each, got "
                f"lengths {lengths}."
            )
        if gt_size is None:
            raise ValueError(
                "progressive training needs gt_size: the (largest) patch size the loader crops; "
                "gt_sizes are cut from it."
            )
        too_large = [size for size in self.gt_sizes if size > gt_size]
        if too_large:
            raise ValueError(
                f"gt_sizes {self.gt_sizes} exceed gt_size {gt_size} (the loaded patch); raise "
                f"gt_size to max(gt_sizes) = {max(self.gt_sizes)}."
            )
        odd = [size for size in self.gt_sizes if size % scale]
        if odd:
            raise ValueError(f"gt_sizes {odd} are not multiples of scale {scale}.")

    @property
    def is_progressive(self) -> bool:
        return self.mini_batch_sizes is not None


class ProgressiveSchedule:
    """Cuts each training batch to the patch and batch size of the iteration's phase.

    Args:
        mini_batch_sizes, iters, gt_sizes: one entry per phase (see the module docstring).
        batch_size: ``batch_size_per_gpu``, the loaded batch size.
        gt_size: the loaded GT patch size.
        scale: GT size / LQ size.
        seed: ``manual_seed``; rank: this process's rank (ranks draw differently).
    """

    def __init__(
        self,
        mini_batch_sizes: list[int],
        iters: list[int],
        gt_sizes: list[int],
        batch_size: int,
        gt_size: int,
        scale: int = 1,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if any(size > batch_size for size in mini_batch_sizes):
            raise ValueError(
                f"mini_batch_sizes {list(mini_batch_sizes)} exceed batch_size_per_gpu "
                f"{batch_size} (the loaded batch they are drawn from); raise batch_size_per_gpu "
                f"to max(mini_batch_sizes) = {max(mini_batch_sizes)}."
            )
        self.mini_batch_sizes = list(mini_batch_sizes)
        self.gt_sizes = list(gt_sizes)
        self.ends = np.cumsum(iters).tolist()  # last iteration of each phase
        self.batch_size, self.gt_size, self.scale = batch_size, gt_size, scale
        self.seed, self.rank = seed, rank
        self._announced: set[int] = set()

    def phase(self, iteration: int) -> int:
        """Index of the phase of ``iteration`` (1-based), the last one past the end."""
        for index, end in enumerate(self.ends):
            if iteration <= end:
                return index
        return len(self.ends) - 1

    def __call__(self, data: Mapping[str, Any], iteration: int) -> dict[str, Any]:
        """The batch ``data`` (``lq``: B x C x h x w, ``gt``: B x C x H x W, other keys are
        per-sample lists or tensors) cut for ``iteration``; ``data`` itself is not changed."""
        j = self.phase(iteration)
        mini_batch, gt_patch = self.mini_batch_sizes[j], self.gt_sizes[j]
        if j not in self._announced:
            self._announced.add(j)
            logger.info(
                "Progressive training, iteration %d: phase %d, patch %d, batch %d per process.",
                iteration,
                j + 1,
                gt_patch,
                mini_batch,
            )
        out = dict(data)
        rng = np.random.default_rng((self.seed, self.rank, iteration))
        batch = out["lq"].shape[0]
        if mini_batch < batch:
            keep = torch.from_numpy(rng.choice(batch, size=mini_batch, replace=False))
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and value.shape[:1] == (batch,):
                    out[key] = value[keep]
                elif isinstance(value, list) and len(value) == batch:
                    out[key] = [value[int(i)] for i in keep]
        if gt_patch < self.gt_size:
            lq_patch, lq_loaded = gt_patch // self.scale, self.gt_size // self.scale
            top, left = (int((lq_loaded - lq_patch) * u) for u in rng.random(2))
            out["lq"] = out["lq"][..., top : top + lq_patch, left : left + lq_patch]
            if "gt" in out:
                top, left = top * self.scale, left * self.scale
                out["gt"] = out["gt"][..., top : top + gt_patch, left : left + gt_patch]
        return out


def progressive_schedule(
    dataset_opt: Any, batch_size: int, seed: int = 0, rank: int = 0
) -> ProgressiveSchedule | None:
    """The schedule of a parsed train dataset's options (``dataset.opt``), or None when the
    dataset has no progressive keys."""
    if not getattr(dataset_opt, "is_progressive", False):
        return None
    return ProgressiveSchedule(
        dataset_opt.mini_batch_sizes,
        dataset_opt.iters,
        dataset_opt.gt_sizes,
        batch_size,
        dataset_opt.gt_size,
        dataset_opt.scale,
        seed,
        rank,
    )
