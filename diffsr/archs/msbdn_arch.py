"""MSBDN-DFF: Multi-Scale Boosted Dehazing Network with Dense Feature Fusion (CVPR 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffsr.archs.arch_util import DenseFeatureFusion, crop_back, pad_to_multiple
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["MSBDN"]


def reflect_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> nn.Conv2d:
    """Convolution with reflection padding of ``kernel_size // 2``."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        padding_mode="reflect",
    )


class ScaledResidualBlock(nn.Module):
    """x + 0.1 * conv(PReLU(conv(x))), 3x3 reflection-padded convolutions."""

    def __init__(self, channels: int, residual_scale: float = 0.1) -> None:
        super().__init__()
        self.conv1 = reflect_conv(channels, channels, 3)
        self.act = nn.PReLU()
        self.conv2 = reflect_conv(channels, channels, 3)
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.conv2(self.act(self.conv1(x)))


def residual_group(channels: int, num_blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ScaledResidualBlock(channels) for _ in range(num_blocks)))


@ARCH_REGISTRY.register(name="MSBDN-DFF-v1-1")
@ARCH_REGISTRY.register(name="MSBDN-DFF")
@ARCH_REGISTRY.register()
class MSBDN(nn.Module):
    """MSBDN-DFF dehazing network (Dong et al., "Multi-Scale Boosted Dehazing Network with Dense
    Feature Fusion", CVPR 2020), computing the function of the authors' release
    (BookerDeWitt/MSBDN-DFF, ``networks/MSBDN-DFF-v1-1.py``, class ``Net``).

    A U-Net (5 levels by default): an 11x11 input conv, at every encoder level stride-2 3x3 conv ->
    dense feature fusion with all finer encoder features (back-projection) -> residual group
    (with a skip over the group); ``bottleneck_blocks`` residual blocks at the coarsest level
    applied as a boosting step ``body(2 f) + 2 f - f``; every decoder level upsamples with a
    3x3 stride-2 transposed conv without padding (2 h + 1 rows), resized bilinearly
    (``align_corners=False``) to the encoder skip's size, then a strengthen-operate-subtract
    (SOS) boosting module ``group(u + e) + (u + e) - u`` (``u`` upsampled decoder feature,
    ``e`` encoder skip) followed by dense feature fusion with all coarser decoder features. The
    level convs use reflection padding; residual branches are scaled by 0.1. The default (paper)
    configuration has 31,353,061 parameters, as the release.

    Registry names: ``MSBDN`` and the authors' model names ``MSBDN-DFF`` and
    ``MSBDN-DFF-v1-1`` (their ``--model``); their class ``Net`` is too generic to be an alias.

    Args:
        image_channels: channels of the input and output images.
        widths: channels per level, finest first (the paper: 16/32/64/128/256).
        blocks_per_level: residual blocks in each encoder and decoder group.
        bottleneck_blocks: residual blocks at the coarsest level (default 18).
        input_kernel_size: kernel of the first convolution.
        res_blocks: the authors' name for ``bottleneck_blocks`` (``Net(res_blocks=18)``); give
            one of the two.

    Input: B x image_channels x H x W in [0, 1], any H, W. The release needs H and W to be
    multiples of ``2**(len(widths) - 1)`` (16), where diffsr computes exactly its function;
    other sizes are reflect-padded to such a multiple and cropped back (an extension). Output:
    B x image_channels x H x W, the dehazed image (unbounded; about [0, 1] once trained).
    """

    def __init__(
        self,
        image_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        blocks_per_level: int = 3,
        bottleneck_blocks: int | None = None,
        input_kernel_size: int = 11,
        res_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if bottleneck_blocks is not None and res_blocks not in (None, bottleneck_blocks):
            raise ValueError(
                "MSBDN: res_blocks is the authors' name for bottleneck_blocks; got both "
                f"(res_blocks={res_blocks}, bottleneck_blocks={bottleneck_blocks}), give one."
            )
        bottleneck_blocks = next(n for n in (bottleneck_blocks, res_blocks, 18) if n is not None)
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"MSBDN: widths needs at least two levels, got {widths}.")
        self.widths = widths
        self.pad_multiple = 2 ** (len(widths) - 1)
        levels = range(1, len(widths))

        self.conv_in = reflect_conv(image_channels, widths[0], input_kernel_size)
        self.encoder_groups = nn.ModuleList(
            residual_group(w, blocks_per_level) for w in widths[:-1]
        )
        self.downsample = nn.ModuleList(
            reflect_conv(widths[k - 1], widths[k], 3, stride=2) for k in levels
        )
        # encoder level k fuses with levels k-1 ... 0
        self.encoder_fusion = nn.ModuleList(
            DenseFeatureFusion(widths[k::-1], towards="finer") for k in levels
        )
        self.bottleneck = residual_group(widths[-1], bottleneck_blocks)
        # decoder modules are indexed by the level they produce, finest first; the transposed
        # convs have no padding (h -> 2 h + 1) and are followed by a resize to the skip's size
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[k], widths[k - 1], 3, stride=2) for k in levels
        )
        self.decoder_groups = nn.ModuleList(
            residual_group(w, blocks_per_level) for w in widths[:-1]
        )
        # decoder level k fuses with levels k+1 ... top
        self.decoder_fusion = nn.ModuleList(
            DenseFeatureFusion(widths[k:], towards="coarser") for k in range(len(widths) - 1)
        )
        self.conv_out = reflect_conv(widths[0], image_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.pad_multiple)
        feature = self.conv_in(x)
        fused_memory = [feature]
        skips = [self.encoder_groups[0](feature) + feature]
        for k in range(1, len(self.widths)):
            feature = self.downsample[k - 1](skips[-1])
            feature = self.encoder_fusion[k - 1](feature, fused_memory)
            if k < len(self.widths) - 1:
                fused_memory.append(feature)
                skips.append(self.encoder_groups[k](feature) + feature)

        # boosting at the bottleneck: body(2 f) + 2 f - f
        strengthened = 2 * feature
        feature = self.bottleneck(strengthened) + strengthened - feature
        decoded_memory = [feature]
        for k in reversed(range(len(self.widths) - 1)):
            upsampled = F.interpolate(
                self.upsample[k](feature),
                size=skips[k].shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
            strengthened = upsampled + skips[k]
            feature = self.decoder_groups[k](strengthened) + strengthened - upsampled
            feature = self.decoder_fusion[k](feature, decoded_memory)
            decoded_memory.append(feature)
        return crop_back(self.conv_out(feature), size)
