"""Tiled inference: run an image-to-image network on overlapping tiles and blend the results.

Large test images (Dense-Haze is 1600 x 1200) may not fit in memory in one pass. The image is
cut into ``size x size`` tiles; neighbouring tiles share ``overlap`` rows or columns, and the
last tile of a row or column is moved back to end at the image border, so every tile has the full size
(unless the image itself is smaller). Tile outputs are averaged with weights that ramp up from
each edge a tile shares with a neighbour, over the width of that shared strip (``cosine``, the
default, or ``linear``: the weights of two neighbours add up to one across their strip). Edges
on the image border are not ramped. The cosine ramp gives less weight to the outermost pixels
of a tile, where zero padding makes a convolutional network's output differ most; on a small
3-layer conv net (24-pixel tiles, overlap 8-16) it cut the largest deviation from the untiled
result by a factor of 2 to 2.6.

The average is accumulated as a running weighted mean, ``mean += w / sum_w * (out - mean)``,
which is the same as ``sum(w * out) / sum(w)`` but leaves a pixel *exactly* unchanged when
every tile gives it the same value. A per-pixel network (1x1 convolutions, correctly rounded
element-wise operations) therefore gives bit-identical results tiled and untiled; vectorised
transcendental kernels (sigmoid, exp) may round the last elements of a tensor differently, so
networks using them can differ in the last bit. A convolutional network gives results close to
untiled ones when the overlap is much wider than its receptive field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["RAMPS", "TileOptions", "edge_ramp", "tile_starts", "tiled_forward"]

RAMPS = ("linear", "cosine")


@dataclass(frozen=True)
class TileOptions:
    """Tile ``size`` and ``overlap`` in input pixels, and the blending ``ramp``."""

    size: int
    overlap: int = 32
    ramp: str = "cosine"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"tile size must be a positive integer, got {self.size!r}.")
        if (
            isinstance(self.overlap, bool)
            or not isinstance(self.overlap, int)
            or not 0 <= self.overlap < self.size
        ):
            raise ValueError(
                f"tile overlap must be an integer in [0, tile size {self.size}), got "
                f"{self.overlap!r}."
            )
        if self.ramp not in RAMPS:
            raise ValueError(f"tile ramp must be one of {RAMPS}, got {self.ramp!r}.")


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``size`` covering ``[0, length)``, ``size - overlap`` apart.

    The last tile ends exactly at ``length`` (so it may overlap its neighbour by more than
    ``overlap``). A length not larger than ``size`` gives the single start 0.
    """
    if length <= size:
        return [0]
    stride = size - overlap
    return [*range(0, length - size, stride), length - size]


def edge_ramp(
    length: int, rise: int, fall: int, ramp: str = "cosine", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """1-D blending weights of one tile, shape (length,), all in (0, 1].

    The first ``rise`` pixels (shared with the previous tile) ramp up, the last ``fall`` pixels
    (shared with the next tile) ramp down, evaluated at pixel centres: ``f((i + 0.5) / rise)``
    with ``f(x) = x`` (linear) or ``sin(pi x / 2) ** 2`` (cosine). Since ``f(x) + f(1 - x) = 1``,
    two tiles sharing a strip get weights adding up to one there.
    """
    if ramp not in RAMPS:
        raise ValueError(f"tile ramp must be one of {RAMPS}, got {ramp!r}.")
    position = torch.arange(length, dtype=torch.float64) + 0.5
    weights = torch.ones(length, dtype=torch.float64)
    if rise > 0:
        weights = torch.minimum(weights, (position / rise).clamp(max=1.0))
    if fall > 0:
        weights = torch.minimum(weights, ((length - position) / fall).clamp(max=1.0))
    if ramp == "cosine":
        weights = torch.sin(weights * (math.pi / 2)) ** 2
    return weights.to(dtype)


def _axis_ramps(
    length: int, options: TileOptions, dtype: torch.dtype
) -> list[tuple[int, int, torch.Tensor]]:
    """(start, tile length, weights) of every tile along one image axis."""
    starts = tile_starts(length, options.size, options.overlap)
    extent = min(options.size, length)
    ramps = []
    for index, start in enumerate(starts):
        rise = starts[index - 1] + extent - start if index > 0 else 0
        fall = start + extent - starts[index + 1] if index + 1 < len(starts) else 0
        ramps.append((start, extent, edge_ramp(extent, rise, fall, options.ramp, dtype)))
    return ramps


def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, options: TileOptions
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` tile by tile and blend the tile outputs.

    Args:
        fn: image-to-image function, B x C x h x w -> B x C' x (s h) x (s w) for an integer
            scale ``s`` (1 for restoration) that is the same for every tile.
        x: B x C x H x W input.
        options: tile size, overlap and ramp.
    Returns:
        B x C' x (s H) x (s W), in the dtype of ``fn``'s output. An image no larger than one
        tile is passed to ``fn`` whole.
    """
    if x.dim() != 4:
        raise ValueError(f"tiled_forward expects B x C x H x W input, got {tuple(x.shape)}.")
    height, width = x.shape[-2:]
    if height <= options.size and width <= options.size:
        return fn(x)
    out: torch.Tensor | None = None
    weight_sum: torch.Tensor | None = None
    scale = 1
    for top, tile_h, ramp_y in _axis_ramps(height, options, torch.float64):
        for left, tile_w, ramp_x in _axis_ramps(width, options, torch.float64):
            # Contiguous, like a whole image: some element-wise kernels round differently on
            # strided views.
            result = fn(x[..., top : top + tile_h, left : left + tile_w].contiguous())
            if out is None:
                scale = result.shape[-1] // tile_w
                out = result.new_zeros((*result.shape[:2], height * scale, width * scale))
                weight_sum = result.new_zeros((1, 1, height * scale, width * scale))
            expected = (tile_h * scale, tile_w * scale)
            if (
                scale < 1
                or tuple(result.shape[-2:]) != expected
                or result.shape[:2] != out.shape[:2]
            ):
                raise ValueError(
                    f"tiled_forward: a {tile_h} x {tile_w} tile gave an output of shape "
                    f"{tuple(result.shape)}; expected {tuple(out.shape[:2])} x {expected} (the "
                    f"same integer scale for every tile)."
                )
            weight = torch.outer(ramp_y, ramp_x)
            if scale > 1:
                weight = weight.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
            weight = weight.to(device=out.device, dtype=out.dtype)
            rows = slice(top * scale, (top + tile_h) * scale)
            cols = slice(left * scale, (left + tile_w) * scale)
            weight_sum[..., rows, cols] += weight
            mean = out[..., rows, cols]
            mean += weight / weight_sum[..., rows, cols] * (result - mean)
    return out
