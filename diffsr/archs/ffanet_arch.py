"""FFA-Net: Feature Fusion Attention Network for single image dehazing (AAAI 2020)."""

from __future__ import annotations

import torch
from torch import nn

from diffsr.archs.official_rename import authors_argument
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["FFANet"]


def same_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def squeeze_excite(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    """1x1 conv -> ReLU -> 1x1 conv -> sigmoid (the gate of both attention kinds)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 1),
        nn.ReLU(),
        nn.Conv2d(hidden, out_channels, 1),
        nn.Sigmoid(),
    )


class ChannelAttention(nn.Module):
    """x * sigmoid(MLP(avgpool(x))): one weight per channel."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.gate = squeeze_excite(channels, channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(2, 3), keepdim=True))


class PixelAttention(nn.Module):
    """x * sigmoid(MLP(x)): one weight per pixel, shared by all channels."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.gate = squeeze_excite(channels, channels // reduction, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class FeatureAttentionBlock(nn.Module):
    """conv -> ReLU (+ x) -> conv -> channel attention -> pixel attention (+ x)."""

    def __init__(self, channels: int, kernel_size: int, reduction: int) -> None:
        super().__init__()
        self.conv1 = same_conv(channels, channels, kernel_size)
        self.act = nn.ReLU()
        self.conv2 = same_conv(channels, channels, kernel_size)
        self.channel_attention = ChannelAttention(channels, reduction)
        self.pixel_attention = PixelAttention(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.conv1(x)) + x)
        return self.pixel_attention(self.channel_attention(out)) + x


class BlockGroup(nn.Sequential):
    """``num_blocks`` feature attention blocks and a conv, with a skip over the whole group."""

    def __init__(self, channels: int, kernel_size: int, num_blocks: int, reduction: int) -> None:
        blocks = [
            FeatureAttentionBlock(channels, kernel_size, reduction) for _ in range(num_blocks)
        ]
        super().__init__(*blocks, same_conv(channels, channels, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x


@ARCH_REGISTRY.register(name="FFA")
@ARCH_REGISTRY.register()
class FFANet(nn.Module):
    """FFA-Net (Qin et al., "FFA-Net: Feature Fusion Attention Network for Single Image
    Dehazing", AAAI 2020).

    A full-resolution network: a conv, ``num_groups`` groups of ``blocks_per_group`` feature
    attention blocks (local residual + channel attention + pixel attention), fusion of the
    group outputs by channel attention over their concatenation (one weight per group and
    channel) and pixel attention, two convs, and a global residual to the input. The default
    configuration has 4,455,913 parameters.

    Args:
        image_channels: channels of the input/output image.
        channels: feature channels.
        num_groups: block groups whose outputs are fused.
        blocks_per_group: feature attention blocks per group.
        kernel_size: kernel of all spatial convolutions.
        attention_reduction: channel reduction inside the block attentions.
        fusion_reduction: hidden size of the fusion channel attention is ``channels // this``.
        gps, blocks: the authors' names (``FFA(gps, blocks)``) for ``num_groups`` and
            ``blocks_per_group``; the registry alias ``FFA`` is the authors' class name.

    Input: B x image_channels x H x W in [0, 1], any H, W. Output: B x image_channels x H x W,
    the dehazed image (input + predicted residual, unbounded).
    """

    def __init__(
        self,
        image_channels: int = 3,
        channels: int = 64,
        num_groups: int = 3,
        blocks_per_group: int = 19,
        kernel_size: int = 3,
        attention_reduction: int = 8,
        fusion_reduction: int = 16,
        gps: int | None = None,
        blocks: int | None = None,
    ) -> None:
        super().__init__()
        num_groups = authors_argument("FFANet", ("num_groups", num_groups, 3), ("gps", gps))
        blocks_per_group = authors_argument(
            "FFANet", ("blocks_per_group", blocks_per_group, 19), ("blocks", blocks)
        )
        self.num_groups, self.channels = num_groups, channels
        self.head = same_conv(image_channels, channels, kernel_size)
        self.groups = nn.ModuleList(
            BlockGroup(channels, kernel_size, blocks_per_group, attention_reduction)
            for _ in range(num_groups)
        )
        stacked = channels * num_groups
        self.fusion_gate = squeeze_excite(stacked, channels // fusion_reduction, stacked)
        self.fusion_pixel_attention = PixelAttention(channels, attention_reduction)
        self.tail = nn.Sequential(
            same_conv(channels, channels, kernel_size),
            same_conv(channels, image_channels, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.head(x)
        group_outputs = []
        for group in self.groups:
            feature = group(feature)
            group_outputs.append(feature)
        stacked = torch.stack(group_outputs, dim=1)  # B x G x C x H x W
        weights = self.fusion_gate(stacked.flatten(1, 2).mean(dim=(2, 3), keepdim=True))
        fused = (weights.unflatten(1, (self.num_groups, self.channels)) * stacked).sum(dim=1)
        return self.tail(self.fusion_pixel_attention(fused)) + x
