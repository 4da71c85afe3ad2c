"""Paired-dataset keys of the BasicSR forks that two of the paper's networks were released with.

FSDGN (yuhuUSTC/FSDGN ``basicsr/data/paired_image_dataset.py``, dataset type
``PairedImageDataset``):

- ``gt_sizeH`` / ``gt_sizeW``: a ``gt_sizeH x gt_sizeW`` GT patch (LQ: divided by ``scale``) at a
  random place, in the train phase *and in the val phase* (FSDGN crops its validation images
  too). diffsr draws the val crop from the seed and the image index, so every validation
  measures the same region (FSDGN draws a new one each time).
- ``use_flip``: the older BasicSR name of ``use_hflip``.
- ``flag``: read by none of FSDGN's code; accepted, does nothing (one logged line).

Restormer / MB-TaylorFormer (``Dataset_PairedImage``, see ``restormer_paired_dataset.py``):

- ``geometric_augs``: in training, one of the 8 flips/rotations of the square, uniformly
  (``random_augmentation``); the same distribution as ``use_hflip`` + ``use_rot``, which is
  what it is mapped to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from diffsr.data.dataset_options import check_bool, check_int

__all__ = ["ForkPairedKeys"]

logger = logging.getLogger("diffsr")


@dataclass(kw_only=True)
class ForkPairedKeys:
    """FSDGN's and Restormer's paired-dataset keys; :meth:`check_fork_keys` validates them and
    the properties give the crop and flips they mean together with BasicSR's keys."""

    gt_sizeH: int | None = None  # FSDGN's spelling
    gt_sizeW: int | None = None
    use_flip: bool | None = None
    flag: bool | None = None
    geometric_augs: bool | None = None

    def check_fork_keys(self) -> None:
        """Check types and combinations; needs ``gt_size``, ``use_hflip``, ``use_rot``,
        ``scale`` and ``name`` on ``self`` (the dataset options class)."""
        check_int("gt_sizeH", self.gt_sizeH, allow_none=True)
        check_int("gt_sizeW", self.gt_sizeW, allow_none=True)
        for key in ("use_flip", "flag", "geometric_augs"):
            if getattr(self, key) is not None:
                check_bool(key, getattr(self, key))
        if (self.gt_sizeH is None) != (self.gt_sizeW is None):
            raise ValueError("gt_sizeH and gt_sizeW (FSDGN) go together; give both.")
        if self.gt_sizeH is not None:
            if self.gt_size is not None:
                raise ValueError(
                    "give either gt_size (a square patch) or gt_sizeH/gt_sizeW (FSDGN), not both."
                )
            for key in ("gt_sizeH", "gt_sizeW"):
                if getattr(self, key) % self.scale:
                    raise ValueError(
                        f"{key} {getattr(self, key)} must be a multiple of scale {self.scale} "
                        f"(the LQ patch is {key} / scale)."
                    )
        if self.use_flip is not None and self.use_hflip:
            raise ValueError("give either use_hflip (BasicSR) or use_flip (FSDGN), not both.")
        if self.geometric_augs and (self.use_hflip or self.use_rot or self.use_flip):
            raise ValueError(
                "geometric_augs (Restormer: all 8 flips/rotations) replaces use_hflip/use_rot; "
                "give one or the other."
            )
        if self.flag is not None:
            logger.info(
                "Dataset %r: option 'flag' (FSDGN) has no effect; no FSDGN code reads it either.",
                self.name,
            )

    @property
    def crop_hw(self) -> tuple[int, int] | None:
        """GT patch (height, width), or None for whole images, in this dataset's phase."""
        if self.gt_sizeH is not None:
            return (self.gt_sizeH, self.gt_sizeW) if self.phase in ("train", "val") else None
        if self.gt_size is not None and self.is_train:
            return (self.gt_size, self.gt_size)
        return None

    @property
    def hflip(self) -> bool:
        """Random horizontal flips in training."""
        return bool(self.use_hflip or self.use_flip or self.geometric_augs)

    @property
    def rotation(self) -> bool:
        """Random vertical flips and transposes (with ``hflip``: the 8 dihedral transforms)."""
        return bool(self.use_rot or self.geometric_augs)
