"""Image I/O and numpy <-> tensor conversion, with BasicSR's function names and semantics.

Numpy images are H x W x C, BGR (OpenCV order); tensors are C x H x W (or B x C x H x W), RGB.
Everything read from disk or an LMDB goes through :func:`imfrombytes`, so grayscale, alpha and
16-bit files behave the same whatever the storage backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from diffsr.utils.file_util import atomic_path

__all__ = [
    "imfrombytes",
    "img2tensor",
    "imread",
    "imwrite",
    "pad_to_multiple",
    "tensor2img",
    "to_bgr_float",
]


def to_bgr_float(img: np.ndarray, path_for_errors: str = "<array>") -> np.ndarray:
    """Normalise a decoded image to H x W x 3 float32 BGR in [0, 1].

    Grayscale becomes 3 equal channels, an alpha channel is dropped, 8-bit values are divided by
    255 and 16-bit values by 65535. Float images are taken to be in [0, 1] already.
    """
    if img.dtype == np.uint8:
        scaled = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        scaled = img.astype(np.float32) / 65535.0
    elif img.dtype in (np.float32, np.float64):
        scaled = img.astype(np.float32)
    else:
        raise ValueError(
            f"{path_for_errors}: unsupported pixel type {img.dtype}; expected 8- or 16-bit "
            f"integers or floats in [0, 1]."
        )
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    if scaled.ndim != 3 or scaled.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{path_for_errors}: unsupported image shape {img.shape}.")
    channels = scaled.shape[2]
    if channels in (1, 2):  # gray or gray + alpha
        scaled = np.repeat(scaled[:, :, :1], 3, axis=2)
    elif channels == 4:  # BGRA
        scaled = scaled[:, :, :3]
    return np.ascontiguousarray(scaled)


def imfrombytes(content: bytes, path_for_errors: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) to H x W x 3 float32 BGR in [0, 1].

    Pixels are decoded as stored (``cv2.IMREAD_UNCHANGED``: bit depth kept, EXIF orientation
    ignored) and then normalised by :func:`to_bgr_float`. Raises ValueError naming
    ``path_for_errors`` when the bytes are empty or cannot be decoded.
    """
    buffer = np.frombuffer(content, dtype=np.uint8)
    if buffer.size == 0:
        raise ValueError(f"{path_for_errors}: the image file is empty (0 bytes).")
    try:
        img = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ValueError(f"{path_for_errors}: cannot decode the image ({err}).") from err
    if img is None:
        raise ValueError(
            f"{path_for_errors}: cannot decode the image ({buffer.size} bytes); the file is "
            f"corrupt, truncated or not in an image format OpenCV reads."
        )
    return to_bgr_float(img, path_for_errors)


def imread(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 float32 BGR in [0, 1] (see :func:`imfrombytes`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file.")
    return imfrombytes(path.read_bytes(), str(path))


def img2tensor(
    imgs: np.ndarray | Sequence[np.ndarray], bgr2rgb: bool = True, float32: bool = True
) -> torch.Tensor | list[torch.Tensor]:
    """H x W x C (or H x W) numpy image(s) -> C x H x W tensor(s); a list gives a list.

    With ``bgr2rgb`` the channel order of 3-channel images is reversed (BGR -> RGB).
    """

    def convert(img: np.ndarray) -> torch.Tensor:
        if img.ndim == 2:
            img = img[:, :, None]
        if bgr2rgb and img.shape[2] == 3:
            img = img[:, :, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return tensor.float() if float32 else tensor

    if isinstance(imgs, np.ndarray):
        return convert(imgs)
    return [convert(img) for img in imgs]


def tensor2img(
    tensor: torch.Tensor | Sequence[torch.Tensor],
    rgb2bgr: bool = True,
    out_type: type = np.uint8,
    min_max: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray | list[np.ndarray]:
    """C x H x W (or 1 x C x H x W, or H x W) tensor(s) -> H x W x C numpy image(s).

    Values are clamped to ``min_max`` and rescaled to [0, 1]; with ``out_type=np.uint8`` they
    are multiplied by 255 and rounded (as BasicSR does). One-channel results are H x W.
    """

    def convert(t: torch.Tensor) -> np.ndarray:
        if not torch.is_tensor(t):
            raise TypeError(f"tensor2img expects tensors, got {type(t).__name__}.")
        t = t.detach().float().cpu().clamp(*min_max)
        t = (t - min_max[0]) / (min_max[1] - min_max[0])
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(
                    f"tensor2img takes a batch of one image, got shape {tuple(t.shape)}; "
                    f"convert the images one by one."
                )
            t = t[0]
        if t.dim() == 3:
            img = t.numpy().transpose(1, 2, 0)
            if img.shape[2] == 1:
                img = img[:, :, 0]
            elif rgb2bgr and img.shape[2] == 3:
                img = img[:, :, ::-1]
        elif t.dim() == 2:
            img = t.numpy()
        else:
            raise ValueError(f"tensor2img expects 2-, 3- or 4-D tensors, got {t.dim()}-D.")
        if out_type == np.uint8:
            img = (img * 255.0).round()
        return np.ascontiguousarray(img).astype(out_type)

    if torch.is_tensor(tensor):
        return convert(tensor)
    return [convert(t) for t in tensor]


def imwrite(
    img: np.ndarray,
    path: str | os.PathLike,
    params: Sequence[int] | None = None,
    atomic: bool = True,
) -> None:
    """Write an H x W x C BGR (or H x W) image; the codec follows the file extension.

    Parent folders are created. With ``atomic`` the image is encoded in memory and moved into
    place with a rename, so a crash never leaves a truncated file behind.
    """
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", img, list(params or []))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a {img.shape} {img.dtype} image.")
    if atomic:
        with atomic_path(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad a B x C x H x W tensor at the bottom/right so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(H, W)``, to crop the result back with
    ``y[..., :h, :w]``. Reflect padding falls back to replicate when the image is too small.
    """
    h, w = x.shape[-2:]
    pad_h = math.ceil(h / multiple) * multiple - h
    pad_w = math.ceil(w / multiple) * multiple - w
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)
