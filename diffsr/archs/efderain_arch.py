"""EfDeRain: pixel-wise dilation filtering for efficient single-image deraining.

Guo, Sun, Juefei-Xu, Ma, Xie, Feng, Liu, Zhao, "EfficientDeRain: Learning Pixel-wise Dilation
Filtering for High-Efficiency Single-Image Deraining", AAAI 2021.

A kernel-prediction U-Net predicts, for every pixel and colour channel, a 3 x 3 kernel. The same
kernels filter the rainy image at dilations 1, 2, 3 and 4 (pixel-wise dilation filtering), and a
3 x 3 convolution fuses the four filtered images into the derained image.

The released class is ``KPN`` (tsingqguo/efficientderain), a registry alias of
:class:`EfDeRain` that also accepts its constructor arguments.
"""

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.archs.arch_util import crop_back, pad_to_multiple
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["EfDeRain", "pixelwise_dilated_filter"]


def pixelwise_dilated_filter(
    image: torch.Tensor, kernels: torch.Tensor, dilation: int
) -> torch.Tensor:
    """Filter each pixel of ``image`` with its own kernel, sampled at ``dilation``.

    Args:
        image: B x C x H x W.
        kernels: B x C x K*K x H x W, the K x K kernel (row-major) of every pixel and channel.
        dilation: spacing of the kernel taps; the border is zero-padded.

    Returns:
        B x C x H x W: ``out[b, c, y, x] = sum_ij k[b, c, i*K + j, y, x] *
        image[b, c, y + d (i - K//2), x + d (j - K//2)]`` with ``d = dilation``.
    """
    b, c, h, w = image.shape
    taps = kernels.shape[2]
    size = round(taps**0.5)
    if size * size != taps or size % 2 == 0:
        raise ValueError(f"kernels must hold an odd square number of taps, got {taps}.")
    patches = F.unfold(image, size, dilation=dilation, padding=dilation * (size // 2))
    patches = patches.view(b, c, taps, h, w)
    return (patches * kernels).sum(dim=2)


class ConvStack(nn.Sequential):
    """``num_convs`` 3x3 convolutions, each followed by ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int) -> None:
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class KernelPredictionUNet(nn.Module):
    """U-Net (average-pool down, bilinear up) that outputs ``out_channels`` per pixel.

    The decoder has one level fewer than the encoder: its last stage is followed by a 2x
    bilinear upsampling and a 1x1 convolution, as in the kernel prediction network of EfDeRain.
    """

    def __init__(
        self, in_channels: int, out_channels: int, widths: Sequence[int], convs_per_level: int
    ) -> None:
        super().__init__()
        widths = list(widths)
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(ConvStack(channels, width, convs_per_level))
            channels = width
        self.decoder = nn.ModuleList()
        skips = widths[1:-1][::-1]  # the first level's features are not used as a skip
        for i, skip in enumerate(skips):
            width = out_channels if i == len(skips) - 1 else skip
            self.decoder.append(ConvStack(channels + skip, width, convs_per_level))
            channels = width
        self.out_conv = nn.Conv2d(channels, out_channels, 1)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.avg_pool2d(x, 2))
            features.append(x)
        skips = features[1:-1][::-1]
        for stage, skip in zip(self.decoder, skips):
            x = stage(torch.cat([skip, upsample2x(x)], dim=1))
        return self.out_conv(upsample2x(x))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# The released KPN's constructor arguments and the one value of each that its models (and
# diffsr) implement: colour input, one frame, blind estimation, full (not separable) kernels
# without bias, no attention, bilinear upsampling.
RELEASED_KPN_SETTINGS = {
    "color": True,
    "burst_length": 1,
    "blind_est": True,
    "sep_conv": False,
    "channel_att": False,
    "spatial_att": False,
    "upMode": "bilinear",
    "core_bias": False,
}


def check_kpn_arguments(settings: dict[str, object]) -> None:
    """Refuse a KPN constructor argument that asks for something other than the release."""
    for name, value in settings.items():
        expected = RELEASED_KPN_SETTINGS[name]
        if value != expected:
            raise ValueError(
                f"EfDeRain (KPN): {name}={value!r} is not implemented; the released models "
                f"and diffsr use {name}={expected!r}."
            )


def single_kernel_size(kernel_size: int | Sequence[int]) -> int:
    """``kernel_size`` as an int; the released KPN takes a list (``[3]``) of one size."""
    if isinstance(kernel_size, int):
        return kernel_size
    sizes = list(kernel_size)
    if len(sizes) != 1:
        raise ValueError(
            f"EfDeRain: kernel_size {sizes} holds several sizes; the released models (and "
            "diffsr) use one, e.g. kernel_size: 3 or [3]."
        )
    return int(sizes[0])


@ARCH_REGISTRY.register(name="KPN")  # the released code's class name
@ARCH_REGISTRY.register()
class EfDeRain(nn.Module):
    """EfDeRain: per-pixel kernels predicted by a U-Net, applied at several dilations.

    Args:
        widths: encoder widths of the kernel-prediction U-Net (paper: 64/128/256/512/512).
            The input is padded to a multiple of ``2 ** (len(widths) - 1)`` internally.
        convs_per_level: 3x3 conv + ReLU layers per U-Net level (paper: 3).
        kernel_size: side of the predicted per-pixel kernels (paper: 3); an int or, as the
            released ``KPN`` takes it, a list of one int (``[3]``).
        dilations: dilation rates at which the kernels are applied (paper: 1, 2, 3, 4).
        color, burst_length, blind_est, sep_conv, channel_att, spatial_att, upMode,
            core_bias: the released ``KPN``'s other arguments, accepted with the value its
            models use (``RELEASED_KPN_SETTINGS``); any other value is refused.

    Input: rainy image ``B x 3 x H x W`` in [0, 1], any size. Output: derained image
    ``B x 3 x H x W`` (not clamped). The default configuration has 27,395,406 parameters.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        convs_per_level: int = 3,
        kernel_size: int | Sequence[int] = 3,
        dilations: Sequence[int] = (1, 2, 3, 4),
        *,
        color: bool = True,
        burst_length: int = 1,
        blind_est: bool = True,
        sep_conv: bool = False,
        channel_att: bool = False,
        spatial_att: bool = False,
        upMode: str = "bilinear",
        core_bias: bool = False,
    ) -> None:
        super().__init__()
        check_kpn_arguments(
            dict(
                color=color,
                burst_length=burst_length,
                blind_est=blind_est,
                sep_conv=sep_conv,
                channel_att=channel_att,
                spatial_att=spatial_att,
                upMode=upMode,
                core_bias=core_bias,
            )
        )
        kernel_size = single_kernel_size(kernel_size)
        if len(widths) < 3:
            raise ValueError(f"EfDeRain: widths needs at least 3 levels, got {list(widths)}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"EfDeRain: kernel_size must be odd, got {kernel_size}.")
        if not dilations or min(dilations) < 1:
            raise ValueError(
                f"EfDeRain: dilations must be positive integers, got {list(dilations)}."
            )
        self.kernel_size = kernel_size
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_net = KernelPredictionUNet(3, 3 * kernel_size**2, widths, convs_per_level)
        self.fusion = nn.Conv2d(3 * len(self.dilations), 3, 3, padding=1)

    def forward(self, rainy: torch.Tensor) -> torch.Tensor:
        b, c, h, w = rainy.shape
        padded, size = pad_to_multiple(rainy, self.kernel_net.multiple)
        kernels = crop_back(self.kernel_net(padded), size)
        kernels = kernels.reshape(b, c, self.kernel_size**2, h, w)
        filtered = [pixelwise_dilated_filter(rainy, kernels, d) for d in self.dilations]
        return self.fusion(torch.cat(filtered, dim=1))
