"""Datasets and data loaders. Every ``*_dataset.py`` here is imported, registering its classes.

A registered dataset class is built as ``cls(opt, seed=seed)`` where ``opt`` is the whole phase
block of the option file (BasicSR's convention); it validates the keys it reads. The loader keys
(``batch_size_per_gpu``, ``num_worker_per_gpu``, ...) are read by :func:`build_dataloader`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import cv2
import torch
from torch.utils.data import DataLoader, Dataset

from diffsr.data.dataset_options import LOADER_KEYS, PHASES, check_bool, check_int
from diffsr.data.sampler import EpochSampler
from diffsr.utils.registry import DATASET_REGISTRY, import_modules_with_suffix

__all__ = [
    "DATASET_REGISTRY",
    "LOADER_KEYS",
    "EpochSampler",
    "build_dataloader",
    "build_dataset",
    "default_num_workers",
    "worker_init_fn",
]

logger = logging.getLogger("diffsr")

import_modules_with_suffix(__name__, "_dataset")


def build_dataset(opt: Mapping[str, Any], seed: int = 0, scale: int = 1) -> Dataset:
    """Build the dataset named by ``opt['type']`` from a phase option block.

    ``seed`` drives all augmentation randomness (see ``diffsr.data.sampler``). ``scale`` is the
    option file's top-level ``scale`` (the super-resolution factor): as in BasicSR, a dataset
    that reads ``scale`` gets it; a dataset block setting a different ``scale`` is an error
    (with the top-level ``scale`` 1, the default, the dataset's own value stands).
    """
    if not isinstance(opt, Mapping) or "type" not in opt:
        raise ValueError(f"dataset options need a 'type' key (e.g. PairedImageDataset): {opt!r}")
    cls = DATASET_REGISTRY.get(opt["type"])
    return cls(_with_scale(opt, scale, cls), seed=seed)


def _with_scale(opt: Mapping[str, Any], scale: int, cls: type) -> Mapping[str, Any]:
    """``opt`` with the top-level ``scale`` filled in, for datasets that read ``scale``."""
    options_cls = getattr(cls, "options_cls", None)
    reads_scale = options_cls is not None and any(
        f.name == "scale" for f in dataclasses.fields(options_cls)
    )
    if scale == 1 or not reads_scale:
        return opt
    if opt.get("scale", scale) != scale:
        raise ValueError(
            f"dataset {opt.get('name', '')!r}: scale {opt['scale']} differs from the top-level "
            f"scale {scale}; remove the dataset's scale (BasicSR sets it from the top level)."
        )
    return {**opt, "scale": scale}


def default_num_workers() -> int:
    """Loader workers when ``num_worker_per_gpu`` is not set: the usable cores, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(4, cores)


def worker_init_fn(worker_id: int) -> None:
    """Keep each loader worker single-threaded: parallelism comes from the workers themselves."""
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)


def build_dataloader(
    dataset: Dataset,
    opt: Mapping[str, Any],
    phase: str | None = None,
    world_size: int = 1,
    rank: int = 0,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader for ``dataset`` with the loader keys of the phase block ``opt``.

    ``phase`` defaults to ``opt['phase']``. Train: an :class:`EpochSampler` (shuffled per
    ``use_shuffle``, split over ``world_size`` ranks, enlarged by ``dataset_enlarge_ratio``),
    ``batch_size_per_gpu`` samples per batch, ``drop_last``. Call ``loader.sampler.set_epoch(e)``
    at each epoch and ``loader.sampler.seek(iteration, batch_size)`` to resume. Val/test: batch
    size 1 in order, no sampler (every rank sees every image).

    Workers: ``num_worker_per_gpu`` (default :func:`default_num_workers` for train, 0 for
    val/test). A key that is missing or null takes its automatic value: ``pin_memory`` when CUDA
    is available, ``persistent_workers`` for a train loader with workers, ``prefetch_factor`` 2.
    """
    phase = opt.get("phase") if phase is None else phase
    if phase not in PHASES:
        raise ValueError(f"build_dataloader: phase must be one of {PHASES}, got {phase!r}.")
    if opt.get("prefetch_mode") not in (None, "cpu", "cuda"):
        raise ValueError(
            f"prefetch_mode must be null, 'cpu' or 'cuda', got {opt['prefetch_mode']!r}."
        )
    train = phase == "train"
    workers = _option(opt, "num_worker_per_gpu", default_num_workers() if train else 0)
    pin_memory = _option(opt, "pin_memory", torch.cuda.is_available())
    persistent = _option(opt, "persistent_workers", train)
    check_int("num_worker_per_gpu", workers, minimum=0)
    check_bool("pin_memory", pin_memory)
    check_bool("persistent_workers", persistent)
    kwargs: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "persistent_workers": persistent and workers > 0,
        "worker_init_fn": worker_init_fn,
        "generator": torch.Generator().manual_seed(seed),
    }
    if workers > 0:
        kwargs["prefetch_factor"] = _option(opt, "prefetch_factor", 2)
        check_int("prefetch_factor", kwargs["prefetch_factor"])

    if not train:
        return DataLoader(dataset, batch_size=1, shuffle=False, drop_last=False, **kwargs)

    name = opt.get("name", "")
    if opt.get("batch_size_per_gpu") is None:
        raise ValueError(f"dataset {name!r}: the train phase needs batch_size_per_gpu.")
    batch_size = opt["batch_size_per_gpu"]
    use_shuffle = _option(opt, "use_shuffle", True)
    enlarge_ratio = _option(opt, "dataset_enlarge_ratio", 1)
    check_int("batch_size_per_gpu", batch_size)
    check_bool("use_shuffle", use_shuffle)
    check_int("dataset_enlarge_ratio", enlarge_ratio)
    sampler = EpochSampler(len(dataset), world_size, rank, use_shuffle, seed, enlarge_ratio)
    if batch_size > len(sampler):
        raise ValueError(
            f"dataset {name!r}: batch_size_per_gpu {batch_size} exceeds the {len(sampler)} "
            f"samples per epoch on each of {world_size} process(es); lower it or raise "
            f"dataset_enlarge_ratio."
        )
    logger.info(
        "Train loader: %d samples/epoch per rank, batch %d, %d workers.",
        len(sampler),
        batch_size,
        workers,
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)


def _option(opt: Mapping[str, Any], key: str, automatic: Any) -> Any:
    """``opt[key]``, or ``automatic`` when the key is missing or null."""
    value = opt.get(key)
    return automatic if value is None else value
