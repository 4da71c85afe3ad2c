"""Random crops and flips on H x W x C numpy images, driven by an explicit numpy Generator.

All randomness comes from the ``rng`` argument (never the global ``np.random``/``random``),
so a sample depends only on the seed its dataset derives from the sample index.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment", "pad_to_at_least", "paired_random_crop", "random_crop"]


def pad_to_at_least(img: np.ndarray, height: int, width: int, mode: str = "reflect") -> np.ndarray:
    """Pad ``img`` at the bottom/right so it is at least ``height`` x ``width``.

    ``mode``: numpy's ``'reflect'`` (mirror without repeating the edge row) or ``'symmetric'``
    (repeating it: OpenCV's ``BORDER_REFLECT``, which Restormer uses).
    """
    if mode not in ("reflect", "symmetric"):
        raise ValueError(f"pad mode must be 'reflect' or 'symmetric', got {mode!r}.")
    pad_h, pad_w = max(0, height - img.shape[0]), max(0, width - img.shape[1])
    if pad_h == 0 and pad_w == 0:
        return img
    if mode == "reflect" and min(img.shape[:2]) < 2:
        mode = "edge"  # reflect needs 2+ pixels
    return np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` x ``size`` crop of an image at least that large."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"random_crop: image {h}x{w} is smaller than the crop {size}x{size}.")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return img[top : top + size, left : left + size]


def paired_random_crop(
    img_gt: np.ndarray,
    img_lq: np.ndarray,
    gt_size: int | tuple[int, int],
    scale: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop aligned patches (BasicSR's paired random crop): a random LQ patch of
    ``gt_size // scale`` and the GT patch of ``gt_size`` at ``scale`` times its position.

    ``gt_size`` is a square side or ``(height, width)``. The GT image must be exactly ``scale``
    times the LQ image and the LQ image at least as large as the LQ patch (the dataset checks
    both and names the files).
    """
    gt_h, gt_w = (gt_size, gt_size) if isinstance(gt_size, int) else gt_size
    lq_h, lq_w = gt_h // scale, gt_w // scale
    h_lq, w_lq = img_lq.shape[:2]
    if img_gt.shape[:2] != (h_lq * scale, w_lq * scale) or h_lq < lq_h or w_lq < lq_w:
        raise ValueError(
            f"paired_random_crop: GT {img_gt.shape[:2]} / LQ {img_lq.shape[:2]} do not fit "
            f"scale {scale} and crop {gt_h}x{gt_w}."
        )
    top = int(rng.integers(0, h_lq - lq_h + 1))
    left = int(rng.integers(0, w_lq - lq_w + 1))
    lq = img_lq[top : top + lq_h, left : left + lq_w]
    top, left = top * scale, left * scale
    gt = img_gt[top : top + gt_h, left : left + gt_w]
    return gt, lq


def augment(
    imgs: list[np.ndarray], hflip: bool, rotation: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """Apply one random flip/rotation, the same to every image in ``imgs`` (BasicSR's augment).

    With ``hflip`` a horizontal flip happens with probability 1/2; with ``rotation`` a vertical
    flip and a transpose (together: the 8 dihedral transforms) each with probability 1/2.
    """
    do_hflip, do_vflip, do_transpose = rng.random(3) < 0.5
    do_hflip &= hflip
    do_vflip &= rotation
    do_transpose &= rotation
    out = []
    for img in imgs:
        if do_hflip:
            img = img[:, ::-1]
        if do_vflip:
            img = img[::-1]
        if do_transpose:
            img = img.transpose(1, 0, 2)
        out.append(img)
    return out
