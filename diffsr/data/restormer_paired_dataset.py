"""``Dataset_PairedImage``: the paired dataset of Restormer and its forks (MB-TaylorFormer).

It is :class:`~diffsr.data.paired_image_dataset.PairedImageDataset` with Restormer's defaults:
images smaller than the training patch are padded (Restormer always pads, mirroring with the
edge row repeated, OpenCV's ``BORDER_REFLECT``), and its keys ``geometric_augs`` (see
``diffsr.data.fork_keys``) and ``mini_batch_sizes`` / ``iters`` / ``gt_sizes`` (see
``diffsr.data.progressive``) are accepted, as they are by ``PairedImageDataset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffsr.data.paired_image_dataset import PairedImageDataset, PairedImageOptions
from diffsr.utils.registry import DATASET_REGISTRY

__all__ = ["RestormerPairedImageDataset", "RestormerPairedImageOptions"]


@dataclass(kw_only=True)
class RestormerPairedImageOptions(PairedImageOptions):
    """:class:`PairedImageOptions` with Restormer's default ``pad_if_smaller: true``."""

    pad_if_smaller: bool = True


@DATASET_REGISTRY.register(name="Dataset_PairedImage")
class RestormerPairedImageDataset(PairedImageDataset):
    """Restormer's ``Dataset_PairedImage`` (option files name it so)."""

    options_cls = RestormerPairedImageOptions
    pad_mode = "symmetric"
