"""Unpaired images from one folder or LMDB (BasicSR's ``SingleImageDataset``).

Used for inference on LQ images without ground truth (``role: lq``, the default) and for
training a diffusion prior on clean images (``role: gt``): the sample key is the role, so
``role: gt`` yields ``{'gt': ..., 'gt_path': ...}`` read from ``dataroot_gt``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
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
from diffsr.data.lmdb_util import lmdb_key
from diffsr.data.pairing import Selection, natural_key
from diffsr.data.transforms import augment, pad_to_at_least, random_crop
from diffsr.utils.img_util import img2tensor
from diffsr.utils.registry import DATASET_REGISTRY

__all__ = ["SingleImageDataset", "SingleImageOptions"]

logger = logging.getLogger("diffsr")
ROLES = ("lq", "gt")


@dataclass(kw_only=True)
class SingleImageOptions(DatasetOptions):
    """Keys read by :class:`SingleImageDataset`; the folder key is ``dataroot_<role>``."""

    role: str = "lq"
    dataroot_lq: str | None = None
    dataroot_gt: str | None = None
    io_backend: dict[str, Any] = field(default_factory=lambda: {"type": "disk"})
    gt_size: int | None = None
    use_hflip: bool = False
    use_rot: bool = False
    pad_if_smaller: bool = False
    name_filter: str | None = None
    id_range: list[int] | None = None
    meta_info_file: str | None = None
    recursive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.role not in ROLES:
            raise ValueError(f"option 'role' must be one of {ROLES}, got {self.role!r}.")
        if self.dataroot is None:
            raise ValueError(f"role {self.role!r} reads its images from 'dataroot_{self.role}'.")
        check_int("gt_size", self.gt_size, allow_none=True)
        for key in ("use_hflip", "use_rot", "pad_if_smaller", "recursive"):
            check_bool(key, getattr(self, key))

    @property
    def dataroot(self) -> str | None:
        return self.dataroot_lq if self.role == "lq" else self.dataroot_gt


@DATASET_REGISTRY.register()
class SingleImageDataset(Dataset):
    """Images of one folder; optional random crop (``gt_size``) and flips in the train phase.

    ``dataset[v]`` returns ``{role: 3 x H x W float32 RGB in [0, 1], f'{role}_path': str}``.
    Augmentation for sample ``v`` uses ``numpy.random.default_rng((seed, v))`` only.
    """

    options_cls = SingleImageOptions

    def __init__(self, opt: Mapping[str, Any], seed: int = 0) -> None:
        self.opt = parse_dataset_options(opt, self.options_cls)
        self.seed = seed
        o = self.opt
        self.role = o.role
        self.folder = open_image_folder(o.dataroot, o.io_backend, o.recursive)
        if not self.folder.names:
            raise ValueError(f"{o.dataroot}: contains no images.")
        selection = Selection(o.name_filter, o.id_range, o.meta_info_file)
        names = [n for n in self.folder.names if selection.keep_id(lmdb_key(n))]
        names.sort(key=natural_key)
        self.names = selection.apply_meta_info(
            names, lambda n: (n, lmdb_key(n), PurePosixPath(n).name)
        )
        if not self.names:
            raise ValueError(f"{o.dataroot}: name_filter/id_range removed every image.")
        logger.info(
            "Dataset %r (%s): %d images from %s (%s backend).",
            o.name,
            o.phase,
            len(self.names),
            o.dataroot,
            o.io_backend["type"],
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        o = self.opt
        name = self.names[index % len(self.names)]
        path = self.folder.path_of(name)
        img = self.folder.read(name)
        if o.is_train:
            rng = np.random.default_rng((self.seed, index))
            if o.gt_size is not None:
                h, w = img.shape[:2]
                if (h < o.gt_size or w < o.gt_size) and not o.pad_if_smaller:
                    raise ValueError(
                        f"{path} ({h}x{w}) is smaller than the crop gt_size {o.gt_size}; lower "
                        f"gt_size or set pad_if_smaller: true to reflect-pad small images."
                    )
                img = random_crop(pad_to_at_least(img, o.gt_size, o.gt_size), o.gt_size, rng)
            (img,) = augment([img], o.use_hflip, o.use_rot, rng)
        return {self.role: img2tensor(img, bgr2rgb=True, float32=True), f"{self.role}_path": path}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.opt.name!r}, phase={self.opt.phase!r}, "
            f"role={self.role!r}, images={len(self)})"
        )
