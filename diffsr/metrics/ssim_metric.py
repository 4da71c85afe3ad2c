"""Structural similarity (Wang et al. 2004), computed as BasicSR does and on tensors."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from diffsr.metrics.metric_util import (
    SSIM_K1,
    SSIM_K2,
    SSIM_WINDOW_SIZE,
    gaussian_window,
    prepare_pair,
    prepare_pair_pt,
    ssim_map_pt,
)
from diffsr.utils.registry import METRIC_REGISTRY

__all__ = ["calculate_ssim", "calculate_ssim_pt"]


def ssim_single_channel(img: np.ndarray, img2: np.ndarray) -> float:
    """Mean SSIM of two H x W float64 images in [0, 255] over the valid (unpadded) region."""
    window = gaussian_window()
    pad = SSIM_WINDOW_SIZE // 2
    c1 = (SSIM_K1 * 255.0) ** 2
    c2 = (SSIM_K2 * 255.0) ** 2

    def local_mean(x: np.ndarray) -> np.ndarray:
        # filter2D pads the border; cropping the window radius keeps only fully covered pixels.
        return cv2.filter2D(x, -1, window)[pad:-pad, pad:-pad]

    mu_x, mu_y = local_mean(img), local_mean(img2)
    var_x = local_mean(img * img) - mu_x**2
    var_y = local_mean(img2 * img2) - mu_y**2
    cov_xy = local_mean(img * img2) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())


@METRIC_REGISTRY.register()
def calculate_ssim(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    input_order: str = "HWC",
    test_y_channel: bool = False,
) -> float:
    """SSIM between two BGR images in [0, 255] (uint8 or float; H x W x C by default).

    11 x 11 Gaussian window (sigma 1.5), valid region only, averaged over channels.
    ``crop_border`` and ``test_y_channel`` as in :func:`calculate_psnr`.
    """
    img, img2 = prepare_pair(img, img2, crop_border, input_order, test_y_channel)
    if min(img.shape[:2]) < SSIM_WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} pixels (after "
            f"cropping), got {img.shape[0]}x{img.shape[1]}."
        )
    per_channel = [ssim_single_channel(img[..., c], img2[..., c]) for c in range(img.shape[2])]
    return float(np.mean(per_channel))


def calculate_ssim_pt(
    img: torch.Tensor, img2: torch.Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> torch.Tensor:
    """Per-image SSIM (float64 tensor of shape B) of B x C x H x W RGB tensors in [0, 1].

    Equal to :func:`calculate_ssim` on the same images scaled to [0, 255] and given as BGR.
    """
    img, img2 = prepare_pair_pt(img, img2, crop_border, test_y_channel)
    return ssim_map_pt(img, img2, data_range=1.0).mean(dim=(1, 2, 3))
