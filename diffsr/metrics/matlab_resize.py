"""MATLAB's ``imresize`` (bicubic, with antialiasing when shrinking) on 2-D float arrays.

Each output pixel ``i`` (1-based) of an axis of length ``n`` resized by ``s`` sits at input
position ``u = i / s + (1 - 1 / s) / 2``; it is the normalised sum of the input pixels around
``u`` weighted by the cubic kernel (Keys, ``a = -0.5``), stretched by ``1 / s`` when ``s < 1``
so that it also low-passes. Input pixels beyond the border are mirrored (``n, n-1, ...``).
NIQE's second scale is this resize at ``s = 1/2`` (MATLAB's ``imresize(img, 0.5)``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cubic_kernel", "matlab_imresize", "resize_matrix"]

KERNEL_WIDTH = 4.0


def cubic_kernel(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), support [-2, 2]."""
    ax = np.abs(x)
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_matrix(in_length: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The ``ceil(in_length * scale) x in_length`` matrix resizing one axis (float64)."""
    out_length = math.ceil(in_length * scale)
    stretch = scale if scale < 1 and antialiasing else 1.0
    width = KERNEL_WIDTH / stretch
    centres = np.arange(1, out_length + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(centres - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    weights = stretch * cubic_kernel((centres[:, None] - indices) * stretch)
    weights /= weights.sum(axis=1, keepdims=True)
    mirrored = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    columns = mirrored[(indices.astype(np.int64) - 1) % (2 * in_length)]
    matrix = np.zeros((out_length, in_length))
    rows = np.repeat(np.arange(out_length), taps)
    np.add.at(matrix, (rows, columns.ravel()), weights.ravel())
    return matrix


def matlab_imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """Resize an H x W float array by ``scale`` as MATLAB's ``imresize(img, scale)``.

    Returns a float64 array of ``ceil(H * scale) x ceil(W * scale)``, not rounded or clipped.
    """
    if img.ndim != 2:
        raise ValueError(f"matlab_imresize expects a 2-D (H x W) array, got shape {img.shape}.")
    if scale <= 0:
        raise ValueError(f"matlab_imresize: scale must be positive, got {scale}.")
    rows = resize_matrix(img.shape[0], scale, antialiasing)
    cols = resize_matrix(img.shape[1], scale, antialiasing)
    return rows @ img.astype(np.float64) @ cols.T
