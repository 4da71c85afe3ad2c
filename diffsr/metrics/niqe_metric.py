"""NIQE, the no-reference Natural Image Quality Evaluator (Mittal et al., IEEE SPL 2013).

Lower is better. As BasicSR's ``calculate_niqe`` (which follows the MATLAB release): the image
becomes its Y channel (or gray) rounded to integers in [0, 255], is cut into 96 x 96 blocks
(the remainder dropped), and at two scales (full, then MATLAB-``imresize`` by 1/2 with blocks
of 48 x 48) every block gives 18 features of its mean-subtracted, contrast-normalised (MSCN)
coefficients: the asymmetric-generalised-Gaussian (AGGD) fit of the coefficients and of their
products with the horizontal, vertical and two diagonal neighbours. A multivariate Gaussian
fitted to the 36-dimensional block features is compared with the one fitted to pristine
images (``data/niqe_pris_params.npz``, see ``data/README.md``):
``sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu))``.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

from diffsr.metrics.matlab_resize import matlab_imresize
from diffsr.metrics.metric_util import Y_OFFSET, Y_WEIGHTS_RGB, check_crop_border
from diffsr.utils.registry import METRIC_REGISTRY

__all__ = ["aggd_features", "block_features", "calculate_niqe", "niqe", "pristine_model"]

PRISTINE_PARAMS = Path(__file__).resolve().parent / "data" / "niqe_pris_params.npz"
BLOCK_SIZE = 96
# Shape parameters searched when fitting an AGGD (the MATLAB release's grid 0.2:0.001:10).
AGGD_SHAPES = np.arange(200, 10001) / 1000.0
# E[|x|]^2 / E[x^2] of a generalised Gaussian of each shape, to match against the data.
AGGD_RATIOS = gamma(2 / AGGD_SHAPES) ** 2 / (gamma(1 / AGGD_SHAPES) * gamma(3 / AGGD_SHAPES))
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean of shape 36, covariance 36 x 36, 7 x 7 Gaussian window) of the pristine model."""
    with np.load(PRISTINE_PARAMS) as params:
        return (
            params["mu_pris_param"].reshape(-1),
            params["cov_pris_param"],
            params["gaussian_window"],
        )


def aggd_features(x: np.ndarray) -> tuple[float, float, float]:
    """Fit an AGGD to the values ``x``: (shape alpha, left scale, right scale)."""
    x = x.ravel()
    left_std = np.sqrt(np.mean(x[x < 0] ** 2))
    right_std = np.sqrt(np.mean(x[x > 0] ** 2))
    gamma_hat = left_std / right_std
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = AGGD_SHAPES[np.argmin((AGGD_RATIOS - r_norm) ** 2)]
    factor = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return float(alpha), float(left_std * factor), float(right_std * factor)


def block_features(mscn: np.ndarray) -> list[float]:
    """The 18 NIQE features of one block of MSCN coefficients (2-D array)."""
    alpha, left, right = aggd_features(mscn)
    features = [alpha, (left + right) / 2]
    for shift in NEIGHBOUR_SHIFTS:
        products = mscn * np.roll(mscn, shift, axis=(0, 1))  # circular, as the reference
        alpha, left, right = aggd_features(products)
        mean = (right - left) * gamma(2 / alpha) / gamma(1 / alpha)
        features += [alpha, mean, left, right]
    return features


def y_channel_float32(img: np.ndarray) -> np.ndarray:
    """BT.601 Y (H x W, [16, 235] on the 255 scale) of an H x W x 3 BGR image in [0, 255],
    along BasicSR's float32 path: a Y of exactly k + 0.5 (common, the weights having three
    decimals) is then rounded to the same side as there."""
    unit = img.astype(np.float32) / np.float32(255.0)
    y = np.dot(unit, Y_WEIGHTS_RGB[::-1]) + Y_OFFSET  # float64 from the float32 input
    return (y / 255.0).astype(np.float32) * np.float32(255.0)


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients ``(I - mu) / (sigma + 1)``."""
    mu = convolve(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(convolve(img * img, window, mode="nearest") - mu * mu))
    return (img - mu) / (sigma + 1)


def _multiscale_features(
    img: np.ndarray, window: np.ndarray, blocks_h: int, blocks_w: int
) -> np.ndarray:
    """Block features at full and half resolution: blocks x 36 (18 per scale)."""
    per_scale = []
    for factor in (1, 2):
        coefficients = mscn(img, window)
        size = BLOCK_SIZE // factor
        per_scale.append(
            [
                block_features(coefficients[i * size : (i + 1) * size, j * size : (j + 1) * size])
                for i in range(blocks_h)
                for j in range(blocks_w)
            ]
        )
        if factor == 1:
            img = matlab_imresize(img / 255.0, 0.5).astype(np.float32) * 255.0
    return np.concatenate([np.array(f) for f in per_scale], axis=1)


def niqe(img: np.ndarray) -> float:
    """NIQE of an H x W gray/Y image, float in [0, 255]; at least two 96 x 96 blocks."""
    if img.ndim != 2:
        raise ValueError(f"niqe expects an H x W gray or Y image, got shape {img.shape}.")
    blocks_h, blocks_w = img.shape[0] // BLOCK_SIZE, img.shape[1] // BLOCK_SIZE
    if blocks_h * blocks_w < 2:
        raise ValueError(
            f"NIQE needs at least two {BLOCK_SIZE} x {BLOCK_SIZE} blocks, got a "
            f"{img.shape[0]} x {img.shape[1]} image (after crop_border)."
        )
    mu_pristine, cov_pristine, window = pristine_model()
    # float32 throughout, as BasicSR's reference (its filters and resize run in float32).
    img = img[: blocks_h * BLOCK_SIZE, : blocks_w * BLOCK_SIZE].astype(np.float32)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # A flat block (no negative or no positive MSCN values) has NaN features by design;
        # they are skipped in the mean and left out of the covariance, as in the reference.
        warnings.simplefilter("ignore", RuntimeWarning)
        features = _multiscale_features(img, window, blocks_h, blocks_w)
        mu = np.nanmean(features, axis=0)
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < 2:
        raise ValueError(
            "NIQE: fewer than two image blocks have defined features (flat blocks have none); "
            "the image is too flat or too small for NIQE."
        )
    cov = np.cov(complete, rowvar=False)
    diff = mu_pristine - mu
    return float(np.sqrt(diff @ np.linalg.pinv((cov_pristine + cov) / 2) @ diff))


@METRIC_REGISTRY.register()
def calculate_niqe(
    img: np.ndarray,
    img2: np.ndarray | None = None,
    crop_border: int = 0,
    input_order: str = "HWC",
    convert_to: str = "y",
    num_thread: int | None = None,
) -> float:
    """NIQE of a BGR image in [0, 255] (uint8 or float), as BasicSR's ``calculate_niqe``.

    Args:
        img: H x W x 3 (``input_order='HWC'``), 3 x H x W (``'CHW'``) or H x W (``'HW'``, used
            as it is).
        img2: the reference image, which a no-reference metric does not use (it is accepted so
            that NIQE can sit in ``val.metrics`` next to PSNR; give ``better: lower`` there).
        crop_border: pixels removed from each side first.
        convert_to: ``'y'`` (BT.601 Y) or ``'gray'`` (OpenCV's BGR-to-gray).
        num_thread: accepted for BasicSR option files; NIQE runs in one thread here.
    """
    del img2, num_thread
    check_crop_border(crop_border)
    if input_order not in ("HWC", "CHW", "HW"):
        raise ValueError(f"input_order must be 'HWC', 'CHW' or 'HW', got {input_order!r}.")
    if convert_to not in ("y", "gray"):
        raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}.")
    img = np.asarray(img).astype(np.float32)
    if input_order != "HW":
        if img.ndim != 3:
            raise ValueError(f"input_order {input_order!r} needs a 3-D image, got {img.shape}.")
        if input_order == "CHW":
            img = img.transpose(1, 2, 0)
        if img.shape[2] != 3:
            raise ValueError(f"NIQE converts a 3-channel BGR image, got shape {img.shape}.")
        if convert_to == "y":
            img = y_channel_float32(img)
        else:
            img = cv2.cvtColor(img / 255.0, cv2.COLOR_BGR2GRAY) * 255.0
    elif img.ndim != 2:
        raise ValueError(f"input_order 'HW' needs a 2-D image, got shape {img.shape}.")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    return niqe(np.round(img))
