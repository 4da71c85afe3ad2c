"""Shared helpers for PSNR / SSIM: input checks, cropping, the BT.601 Y channel, the SSIM window.

Two input conventions are supported, as in BasicSR:

- numpy: H x W x C (or C x H x W with ``input_order='CHW'``, or H x W) BGR images in [0, 255],
  uint8 or float; everything is computed in float64.
- torch (``*_pt`` functions): B x C x H x W RGB tensors in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SSIM_SIGMA",
    "SSIM_WINDOW_SIZE",
    "bgr_to_y",
    "check_pair_pt",
    "crop_pt",
    "gaussian_window",
    "prepare_pair",
    "prepare_pair_pt",
    "rgb_to_y_pt",
    "ssim_map_pt",
]

# ITU-R BT.601 luma for studio range: Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in
# [0, 1], giving Y in [16, 235] on the 255 scale (MATLAB's rgb2ycbcr, as BasicSR).
Y_OFFSET = 16.0
Y_WEIGHTS_RGB = (65.481, 128.553, 24.966)

SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def check_crop_border(crop_border: int) -> int:
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}.")
    return crop_border


def to_hwc_float64(img: np.ndarray, input_order: str) -> np.ndarray:
    """An H x W, H x W x C or C x H x W array as a float64 H x W x C array."""
    if not isinstance(img, np.ndarray):
        raise TypeError(
            f"expected a numpy array, got {type(img).__name__}; for B x C x H x W tensors in "
            f"[0, 1] use calculate_psnr_pt / calculate_ssim_pt."
        )
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}.")
    if img.ndim == 2:
        img = img[..., None]
    elif img.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {img.shape}.")
    elif input_order == "CHW":
        img = img.transpose(1, 2, 0)
    return img.astype(np.float64)


def bgr_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 Y of an H x W x 3 BGR float image in [0, 255]; returns H x W x 1 in [16, 235]."""
    blue, green, red = img[..., 0], img[..., 1], img[..., 2]
    w_r, w_g, w_b = Y_WEIGHTS_RGB
    y = Y_OFFSET + (w_r * red + w_g * green + w_b * blue) / 255.0
    return y[..., None]


def crop_border_hwc(img: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border == 0:
        return img
    return img[crop_border:-crop_border, crop_border:-crop_border, :]


def prepare_pair(
    img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str, test_y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Check two images and return them as float64 H x W x C arrays, Y-converted and cropped."""
    shapes = (getattr(img, "shape", None), getattr(img2, "shape", None))
    if shapes[0] != shapes[1]:
        raise ValueError(f"image shapes differ: img {shapes[0]} vs img2 {shapes[1]}.")
    check_crop_border(crop_border)
    img, img2 = to_hwc_float64(img, input_order), to_hwc_float64(img2, input_order)
    if test_y_channel:
        if img.shape[2] == 3:
            img, img2 = bgr_to_y(img), bgr_to_y(img2)
        elif img.shape[2] != 1:
            raise ValueError(
                f"test_y_channel needs a 3-channel BGR (or 1-channel) image, got shape {img.shape}."
            )
    height, width = img.shape[:2]
    if 2 * crop_border >= min(height, width):
        raise ValueError(f"crop_border={crop_border} removes the whole {height}x{width} image.")
    return crop_border_hwc(img, crop_border), crop_border_hwc(img2, crop_border)


def check_pair_pt(img: torch.Tensor, img2: torch.Tensor, crop_border: int) -> None:
    """Check two B x C x H x W tensors for the ``*_pt`` metrics."""
    for name, tensor in (("img", img), ("img2", img2)):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
            raise ValueError(
                f"{name} must be a B x C x H x W tensor, got "
                f"{getattr(tensor, 'shape', type(tensor).__name__)}."
            )
    if img.shape != img2.shape:
        raise ValueError(
            f"image shapes differ: img {tuple(img.shape)} vs img2 {tuple(img2.shape)}."
        )
    check_crop_border(crop_border)
    if 2 * crop_border >= min(img.shape[-2:]):
        raise ValueError(
            f"crop_border={crop_border} removes the whole {img.shape[-2]}x{img.shape[-1]} image."
        )


def rgb_to_y_pt(img: torch.Tensor) -> torch.Tensor:
    """BT.601 Y of B x 3 x H x W RGB in [0, 1]; returns B x 1 x H x W in [16/255, 235/255]."""
    if img.shape[1] != 3:
        raise ValueError(
            f"test_y_channel needs 3-channel RGB tensors, got shape {tuple(img.shape)}."
        )
    weights = img.new_tensor(Y_WEIGHTS_RGB).view(1, 3, 1, 1)
    return (Y_OFFSET + (img * weights).sum(dim=1, keepdim=True)) / 255.0


def crop_pt(img: torch.Tensor, crop_border: int) -> torch.Tensor:
    if crop_border == 0:
        return img
    return img[..., crop_border:-crop_border, crop_border:-crop_border]


def prepare_pair_pt(
    img: torch.Tensor, img2: torch.Tensor, crop_border: int, test_y_channel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two B x C x H x W RGB tensors in [0, 1] and return them as float64, Y-converted
    (``test_y_channel``) and cropped: the tensor counterpart of :func:`prepare_pair`."""
    check_pair_pt(img, img2, crop_border)
    img, img2 = img.to(torch.float64), img2.to(torch.float64)
    if test_y_channel:
        img, img2 = rgb_to_y_pt(img), rgb_to_y_pt(img2)
    return crop_pt(img, crop_border), crop_pt(img2, crop_border)


def gaussian_window(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 2-D Gaussian window (size x size, float64): outer product of two 1-D kernels."""
    kernel = cv2.getGaussianKernel(size, sigma)
    return kernel @ kernel.T


def ssim_map_pt(img: torch.Tensor, img2: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM of B x C x H x W tensors over the valid region (differentiable).

    Uses the 11 x 11 Gaussian window (sigma 1.5) of Wang et al. without padding, so the result is
    B x C x (H - 10) x (W - 10). Computed in the input dtype.
    """
    if min(img.shape[-2:]) < SSIM_WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} pixels (after "
            f"cropping), got {img.shape[-2]}x{img.shape[-1]}."
        )
    channels = img.shape[1]
    window = torch.from_numpy(gaussian_window()).to(img)
    window = window.expand(5 * channels, 1, *window.shape)
    # One grouped convolution yields the local means of x, y, x^2, y^2 and xy for every channel.
    stacked = torch.cat([img, img2, img * img, img2 * img2, img * img2], dim=1)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = F.conv2d(stacked, window, groups=5 * channels).chunk(
        5, dim=1
    )
    var_x = mean_xx - mu_x**2
    var_y = mean_yy - mu_y**2
    cov_xy = mean_xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return numerator / denominator
