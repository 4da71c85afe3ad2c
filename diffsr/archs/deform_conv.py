"""Deformable 2-D convolution (DCNv1, Dai et al., ICCV 2017) in pure PyTorch.

Every kernel tap of every output pixel reads the input at its regular position plus a learned
fractional offset, interpolated bilinearly. The semantics follow ``torchvision.ops.deform_conv2d``
without a mask: the offset tensor has ``2 * offset_groups * kh * kw`` channels ordered
``(group, kernel point, (dy, dx))`` with kernel points in row-major order, and samples that fall
outside the image read zeros (each of the four bilinear corners separately).

Implementation: one ``F.grid_sample`` call gathers all kernel taps at once into a
``B x C_in x (kh*kw) x (H_out*W_out)`` tensor, and a batched matmul per group contracts it with
the weights. Everything is differentiable with autograd and runs on any device, no custom ops.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DeformConv2d", "autocast_off", "deform_conv2d"]

IntPair = int | tuple[int, int]


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair of ints, got {value!r}.")
    return pair


def _sampling_grid(
    offset: torch.Tensor,
    in_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Normalised grid_sample coordinates of every tap: ``(B*G, K*H_out, W_out, 2)`` as (x, y).

    ``offset`` is ``B x 2*G*K x H_out x W_out`` with pairs ordered (dy, dx).
    """
    batch, _, out_h, out_w = offset.shape
    (in_h, in_w), (kh, kw) = in_size, kernel_size
    taps = kh * kw
    offset = offset.reshape(batch, -1, taps, 2, out_h, out_w)
    opts = {"device": offset.device, "dtype": offset.dtype}
    # Regular positions in pixel units: output pixel * stride - padding + tap * dilation.
    tap_y = (torch.arange(kh, **opts) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, **opts) * dilation[1]).repeat(kh)
    base_y = tap_y[:, None, None] + (torch.arange(out_h, **opts) * stride[0] - padding[0])[:, None]
    base_x = tap_x[:, None, None] + (torch.arange(out_w, **opts) * stride[1] - padding[1])
    y = base_y + offset[:, :, :, 0]  # B x G x K x H_out x W_out
    x = base_x + offset[:, :, :, 1]
    # align_corners=False maps pixel centre p to (2p + 1) / size - 1; unlike align_corners=True
    # this also works for a size of 1.
    grid = torch.stack(((2 * x + 1) / in_w - 1, (2 * y + 1) / in_h - 1), dim=-1)
    return grid.reshape(-1, taps * out_h, out_w, 2)


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """Deformable convolution, same contract as ``torchvision.ops.deform_conv2d`` (no mask).

    Args:
        input: ``B x C_in x H x W``.
        offset: ``B x 2*G*kh*kw x H_out x W_out`` in pixels, ``G`` offset groups dividing
            ``C_in``; for each group and kernel point (row-major) the pair (dy, dx).
        weight: ``C_out x C_in/groups x kh x kw``; ``groups`` is inferred, e.g. ``C_in`` for a
            depthwise convolution.
        bias: optional ``C_out``.
        stride, padding, dilation: as for ``F.conv2d``.

    Returns:
        ``B x C_out x H_out x W_out``, dtype of ``input``. Sampling runs in at least float32
        (so offsets keep sub-pixel precision under bf16/fp16 autocast); the weight contraction
        follows autocast.
    """
    stride, padding, dilation = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    batch, in_ch, in_h, in_w = input.shape
    out_ch, in_per_group, kh, kw = weight.shape
    taps = kh * kw
    if in_ch % in_per_group:
        raise ValueError(
            f"deform_conv2d: input has {in_ch} channels, not a multiple of weight.shape[1]="
            f"{in_per_group} (input channels per group)."
        )
    groups = in_ch // in_per_group
    if out_ch % groups:
        raise ValueError(
            f"deform_conv2d: {out_ch} output channels do not split into {groups} groups."
        )
    out_h = (in_h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (in_w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    offset_groups, rest = divmod(offset.shape[1], 2 * taps)
    if (
        offset.dim() != 4
        or rest
        or offset_groups == 0
        or in_ch % offset_groups
        or offset.shape[0] != batch
        or tuple(offset.shape[2:]) != (out_h, out_w)
    ):
        raise ValueError(
            f"deform_conv2d: offset must be B x 2*G*{taps} x {out_h} x {out_w} with G dividing "
            f"{in_ch} (batch {batch}), got {tuple(offset.shape)}."
        )

    sample_dtype = torch.promote_types(input.dtype, torch.float32)
    with autocast_off(input.device):
        grid = _sampling_grid(
            offset.to(sample_dtype), (in_h, in_w), (kh, kw), stride, padding, dilation
        )
        sampled = F.grid_sample(
            input.to(sample_dtype).reshape(
                batch * offset_groups, in_ch // offset_groups, in_h, in_w
            ),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (B*G_off) x (C_in/G_off) x (K*H_out) x W_out
    columns = sampled.to(input.dtype).reshape(batch, groups, in_per_group * taps, out_h * out_w)
    kernels = weight.reshape(1, groups, out_ch // groups, in_per_group * taps)
    out = torch.matmul(kernels, columns).reshape(batch, out_ch, out_h, out_w)
    if bias is not None:
        out = out + bias.to(out.dtype).reshape(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Module wrapper of :func:`deform_conv2d`; call as ``layer(x, offset)``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as for
            ``nn.Conv2d`` (``groups=in_channels`` gives a depthwise deformable convolution).
    The number of offset groups is read from the offset tensor at call time.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"DeformConv2d: in_channels={in_channels} and out_channels={out_channels} must "
                f"both be divisible by groups={groups}."
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same default as nn.Conv2d.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``x``: B x C_in x H x W; ``offset``: B x 2*G*kh*kw x H_out x W_out (dy, dx pairs)."""
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )
