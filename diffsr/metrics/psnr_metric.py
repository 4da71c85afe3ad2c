"""Peak signal-to-noise ratio, computed as BasicSR does (numpy) and on tensors for validation."""

from __future__ import annotations

import numpy as np
import torch

from diffsr.metrics.metric_util import prepare_pair, prepare_pair_pt
from diffsr.utils.registry import METRIC_REGISTRY

__all__ = ["calculate_psnr", "calculate_psnr_pt"]


@METRIC_REGISTRY.register()
def calculate_psnr(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    input_order: str = "HWC",
    test_y_channel: bool = False,
) -> float:
    """PSNR in dB between two BGR images in [0, 255] (uint8 or float; H x W x C by default).

    ``crop_border`` pixels are removed from each side first; ``test_y_channel`` compares the
    BT.601 Y channel only. Identical images give ``inf``.
    """
    img, img2 = prepare_pair(img, img2, crop_border, input_order, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def calculate_psnr_pt(
    img: torch.Tensor, img2: torch.Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> torch.Tensor:
    """Per-image PSNR (float64 tensor of shape B) of B x C x H x W RGB tensors in [0, 1].

    Equal to :func:`calculate_psnr` on the same images scaled to [0, 255] and given as BGR.
    """
    img, img2 = prepare_pair_pt(img, img2, crop_border, test_y_channel)
    mse = ((img - img2) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)  # mse == 0 gives inf, as in the numpy version
