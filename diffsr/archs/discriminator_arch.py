"""PatchGAN discriminator (Isola et al., pix2pix) for the adversarial-loss baseline.

It scores overlapping patches instead of the whole image, so it accepts any input size that is
large enough; spectral normalisation (Miyato et al. 2018) replaces batch normalisation, which is
unreliable at the paper's batch size of 4.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["PatchDiscriminator"]

KERNEL_SIZE = 4
MAX_WIDTH_MULTIPLIER = 8


@ARCH_REGISTRY.register()
class PatchDiscriminator(nn.Module):
    """Fully convolutional discriminator returning one logit per image patch.

    ``num_layers`` stride-2 4x4 convolutions (widths num_feat * 1, 2, 4, 8, 8, ...), one stride-1
    4x4 convolution, and a stride-1 4x4 convolution to one channel, LeakyReLU(0.2) between them.
    With the defaults each logit sees a 70 x 70 patch.

    Input: B x num_in_ch x H x W images in [0, 1]. Output: B x 1 x H' x W' raw logits, where
    H' = (H // 2**num_layers) - 2 for H divisible by 2**num_layers (e.g. 256 -> 30, 64 -> 6).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_feat: int = 64,
        num_layers: int = 3,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"PatchDiscriminator: num_layers must be >= 1, got {num_layers}.")
        self.num_layers = num_layers

        def conv(in_ch: int, out_ch: int, stride: int) -> nn.Module:
            layer = nn.Conv2d(in_ch, out_ch, KERNEL_SIZE, stride=stride, padding=1)
            return apply_spectral_norm(layer) if spectral_norm else layer

        widths = [num_feat * min(2**i, MAX_WIDTH_MULTIPLIER) for i in range(num_layers + 1)]
        layers: list[nn.Module] = [conv(num_in_ch, widths[0], stride=2)]
        for in_ch, out_ch in itertools.pairwise(widths[:-1]):
            layers += [nn.LeakyReLU(0.2), conv(in_ch, out_ch, stride=2)]
        layers += [nn.LeakyReLU(0.2), conv(widths[-2], widths[-1], stride=1)]
        layers += [nn.LeakyReLU(0.2), conv(widths[-1], 1, stride=1)]
        self.body = nn.Sequential(*layers)

    def output_size(self, size: int) -> int:
        """Spatial output size for an input side of ``size`` pixels (<= 0: too small)."""
        for _ in range(self.num_layers):
            size = (size + 2 - KERNEL_SIZE) // 2 + 1
        return size - 2  # two stride-1 4x4 convolutions with padding 1 remove one pixel each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if min(self.output_size(height), self.output_size(width)) < 1:
            raise ValueError(
                f"PatchDiscriminator: a {height}x{width} input is too small for num_layers="
                f"{self.num_layers}; use larger patches or fewer layers."
            )
        return self.body(x)
