"""Building blocks shared by several networks in ``diffsr.archs``.

Plain module (not ``*_arch.py``), so nothing here is registered. Contents:

- ``pad_to_multiple`` / ``crop_back``: let a network with ``n`` stride-2 stages accept any
  H x W by padding to a multiple of ``2**n`` and cropping the result back.
- ``count_parameters``: number of trainable parameters (works on ``meta`` tensors too).
- ``DenseFeatureFusion``: back-projection fusion of one feature with features of other scales
  (the dense feature fusion of MSBDN, Dong et al., CVPR 2020; reused by FSDGN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseFeatureFusion", "count_parameters", "crop_back", "pad_to_multiple"]


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: Literal["reflect", "replicate"] = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom and right of ``x`` (B x C x H x W) so that H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(H, W)`` for ``crop_back``. Reflect padding
    needs the pad to be smaller than the side; for tiny inputs where it is not, replicate
    padding is used instead (same values at the border, no error).
    """
    if multiple < 1:
        raise ValueError(f"pad_to_multiple: multiple must be >= 1, got {multiple}.")
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"pad_to_multiple: mode must be 'reflect' or 'replicate', got {mode!r}.")
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_back(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple``: keep the top-left ``size = (H, W)`` of ``x`` (... x H' x W')."""
    h, w = size
    return x[..., :h, :w]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements; also works for modules built on ``meta``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class _Resample(nn.Sequential):
    """4x4 stride-2 (transposed) convolution + PReLU: halves or doubles the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        conv_cls = nn.ConvTranspose2d if upsample else nn.Conv2d
        super().__init__(conv_cls(in_channels, out_channels, 4, stride=2, padding=1), nn.PReLU())


class DenseFeatureFusion(nn.Module):
    """Back-projection fusion of a feature with features of other scales (MSBDN's DFF).

    For each other feature ``f_i`` (``i`` steps of 2x away), the running fused feature ``y``
    is projected to the scale of ``f_i`` by a chain of ``i`` stride-2 resampling layers, the
    error ``P(y) - f_i`` is projected back by the mirror chain and added: ``y <- y + Q(P(y) - f_i)``.

    Args:
        channels: channel counts from the scale of the fused feature outwards, one per scale,
            e.g. ``(128, 64, 32, 16)`` for encoder level 3 of a 16/32/64/128 U-Net.
        towards: ``"finer"`` when the other features have higher resolution (encoder side:
            projection by transposed convs), ``"coarser"`` when lower (decoder side).

    Forward: ``x`` (B x channels[0] x H x W) and ``others``, a list of ``len(channels) - 1``
    features ordered farthest scale first, the ``i``-th with ``channels[-1 - i]`` channels and
    size ``H * 2**(n - i)`` (finer) or ``H / 2**(n - i)`` (coarser), ``n = len(others)``.
    Returns a tensor shaped like ``x``. Sizes must match exactly: pad the network input to a
    multiple of ``2**depth`` first.
    """

    def __init__(self, channels: Sequence[int], towards: Literal["finer", "coarser"]) -> None:
        super().__init__()
        if towards not in ("finer", "coarser"):
            raise ValueError(
                f"DenseFeatureFusion: towards must be 'finer' or 'coarser', got {towards!r}."
            )
        if len(channels) < 2:
            raise ValueError(
                f"DenseFeatureFusion needs at least two scales, got channels={channels}."
            )
        self.channels = tuple(int(c) for c in channels)
        upsample = towards == "finer"
        pairs = list(zip(self.channels[:-1], self.channels[1:]))
        # project[j]: scale j -> scale j + 1; project_back[j]: scale j + 1 -> scale j.
        self.project = nn.ModuleList(_Resample(a, b, upsample) for a, b in pairs)
        self.project_back = nn.ModuleList(_Resample(b, a, not upsample) for a, b in pairs)

    def forward(self, x: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        n = len(self.project)
        if len(others) != n:
            raise ValueError(
                f"DenseFeatureFusion built for {n} other scales (channels={self.channels}) "
                f"got {len(others)} features."
            )
        fused = x
        for i, other in enumerate(others):
            steps = n - i
            error = fused
            for j in range(steps):
                error = self.project[j](error)
            error = error - other
            for j in reversed(range(steps)):
                error = self.project_back[j](error)
            fused = fused + error
        return fused
