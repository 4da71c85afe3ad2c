"""Paired LQ/GT image dataset (BasicSR's ``PairedImageDataset``), from folders or LMDBs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffsr.data.dataset_options import (
    DatasetOptions,
    check_bool,
    check_int,
    parse_dataset_options,
)
from diffsr.data.file_client import open_image_folder
from diffsr.data.fork_keys import ForkPairedKeys
from diffsr.data.pairing import NameMapping, Pair, Selection, find_pairs
from diffsr.data.progressive import ProgressiveKeys
from diffsr.data.transforms import augment, pad_to_at_least, paired_random_crop
from diffsr.utils.img_util import img2tensor
from diffsr.utils.registry import DATASET_REGISTRY

__all__ = ["PairedImageDataset", "PairedImageOptions"]

logger = logging.getLogger("diffsr")


@dataclass(kw_only=True)
class PairedImageOptions(ForkPairedKeys, ProgressiveKeys, DatasetOptions):
    """Keys read by :class:`PairedImageDataset` (see docs/data.md), plus the FSDGN/Restormer
    keys of :class:`ForkPairedKeys` and the progressive-training keys of
    :class:`ProgressiveKeys` (read by the training loop)."""

    dataroot_lq: str
    dataroot_gt: str
    io_backend: dict[str, Any] = field(default_factory=lambda: {"type": "disk"})
    scale: int = 1
    gt_size: int | None = None
    use_hflip: bool = False
    use_rot: bool = False
    pad_if_smaller: bool = False
    name_mapping: str | dict[str, str] | None = None
    filename_tmpl: str | None = None
    name_filter: str | None = None
    id_range: list[int] | None = None
    meta_info_file: str | None = None
    recursive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("scale", self.scale)
        check_int("gt_size", self.gt_size, allow_none=True)
        for key in ("use_hflip", "use_rot", "pad_if_smaller", "recursive"):
            check_bool(key, getattr(self, key))
        if self.gt_size is not None and self.gt_size % self.scale:
            fitting = max(1, self.gt_size // self.scale) * self.scale
            raise ValueError(
                f"gt_size {self.gt_size} must be a multiple of scale {self.scale} (the LQ patch "
                f"is gt_size / scale); use e.g. gt_size {fitting}."
            )
        self.check_fork_keys()
        self.check_progressive(self.phase, self.gt_size, self.scale)


@DATASET_REGISTRY.register()
class PairedImageDataset(Dataset):
    """LQ/GT image pairs matched by name; random aligned crops and flips for training.

    Args:
        opt: the phase option dict (keys of :class:`PairedImageOptions` plus loader keys).
        seed: augmentation seed; sample ``v`` uses ``numpy.random.default_rng((seed, v))``.

    ``dataset[v]`` (``v`` may be a virtual index >= ``len(dataset)``, see ``EpochSampler``)
    returns ``{'lq': 3 x h x w, 'gt': 3 x H x W}`` float32 RGB tensors in [0, 1] (``H = h *
    scale``) and their paths ``'lq_path'``, ``'gt_path'``. In the train phase images are cropped
    to ``gt_size`` (if set; the LQ patch is ``gt_size / scale`` at the same place) and
    flipped/rotated per ``use_hflip``/``use_rot``; in val/test phases they are returned whole
    (FSDGN's ``gt_sizeH``/``gt_sizeW`` also crop val images, see ``diffsr.data.fork_keys``).
    """

    options_cls = PairedImageOptions
    pad_mode = "reflect"  # numpy pad mode of pad_if_smaller

    def __init__(self, opt: Mapping[str, Any], seed: int = 0) -> None:
        self.opt = parse_dataset_options(opt, self.options_cls)
        self.seed = seed
        o = self.opt
        mapping = NameMapping.from_options(o.name_mapping, o.filename_tmpl)
        selection = Selection(o.name_filter, o.id_range, o.meta_info_file)
        self.lq_folder = open_image_folder(o.dataroot_lq, o.io_backend, o.recursive)
        self.gt_folder = open_image_folder(o.dataroot_gt, o.io_backend, o.recursive)
        try:
            self.pairs: list[Pair] = find_pairs(
                self.lq_folder.names,
                self.gt_folder.names,
                mapping,
                selection,
                o.dataroot_lq,
                o.dataroot_gt,
            )
        except ValueError as err:
            if o.io_backend.get("type") == "lmdb" and o.name_mapping not in (None, "identity"):
                raise ValueError(
                    f"{err} Note: create_lmdb.py stores both sides of a pair under the pair id, "
                    f"so LMDB input needs no name_mapping."
                ) from None
            raise
        logger.info(
            "Dataset %r (%s): %d LQ/GT pairs from %s and %s (%s backend).",
            o.name,
            o.phase,
            len(self.pairs),
            o.dataroot_lq,
            o.dataroot_gt,
            o.io_backend["type"],
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        o = self.opt
        pair = self.pairs[index % len(self.pairs)]
        lq_path = self.lq_folder.path_of(pair.lq_name)
        gt_path = self.gt_folder.path_of(pair.gt_name)
        img_lq = self.lq_folder.read(pair.lq_name)
        img_gt = self.gt_folder.read(pair.gt_name)
        img_gt = self._match_gt_to_lq(img_gt, img_lq, lq_path, gt_path)

        rng = np.random.default_rng((self.seed, index))
        if o.crop_hw is not None:
            img_gt, img_lq = self._crop(img_gt, img_lq, rng, lq_path, gt_path)
        if o.is_train:
            img_gt, img_lq = augment([img_gt, img_lq], o.hflip, o.rotation, rng)

        tensor_lq, tensor_gt = img2tensor([img_lq, img_gt], bgr2rgb=True, float32=True)
        return {"lq": tensor_lq, "gt": tensor_gt, "lq_path": lq_path, "gt_path": gt_path}

    def _match_gt_to_lq(
        self, img_gt: np.ndarray, img_lq: np.ndarray, lq_path: str, gt_path: str
    ) -> np.ndarray:
        """Check GT = scale x LQ in size; trims a GT larger by less than ``scale`` (mod-crop)."""
        scale = self.opt.scale
        h, w = img_lq.shape[0] * scale, img_lq.shape[1] * scale
        extra_h, extra_w = img_gt.shape[0] - h, img_gt.shape[1] - w
        if not (0 <= extra_h < scale and 0 <= extra_w < scale):
            expected = "the same size" if scale == 1 else f"{scale} times the LQ size"
            raise ValueError(
                f"Size mismatch: LQ {lq_path} is {img_lq.shape[0]}x{img_lq.shape[1]}, GT "
                f"{gt_path} is {img_gt.shape[0]}x{img_gt.shape[1]}; expected GT {expected}."
            )
        return img_gt[:h, :w]

    def _crop(
        self,
        img_gt: np.ndarray,
        img_lq: np.ndarray,
        rng: np.random.Generator,
        lq_path: str,
        gt_path: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        scale, (gt_h, gt_w) = self.opt.scale, self.opt.crop_hw
        lq_h, lq_w = gt_h // scale, gt_w // scale
        h, w = img_lq.shape[:2]
        if h < lq_h or w < lq_w:
            if not self.opt.pad_if_smaller:
                raise ValueError(
                    f"{lq_path} ({h}x{w}) and {gt_path} are smaller than the crop "
                    f"(GT patch {gt_h}x{gt_w}, LQ patch {lq_h}x{lq_w} at scale {scale}); lower "
                    f"the patch size or set pad_if_smaller: true to reflect-pad small images."
                )
            img_lq = pad_to_at_least(img_lq, lq_h, lq_w, self.pad_mode)
            img_gt = pad_to_at_least(
                img_gt, img_lq.shape[0] * scale, img_lq.shape[1] * scale, self.pad_mode
            )
        return paired_random_crop(img_gt, img_lq, (gt_h, gt_w), scale, rng)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.opt.name!r}, phase={self.opt.phase!r}, "
            f"pairs={len(self)}, backend={self.opt.io_backend['type']!r})"
        )
