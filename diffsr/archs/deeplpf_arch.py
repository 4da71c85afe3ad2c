"""DeepLPF: deep local parametric filters for image enhancement.

Moran, Marza, McDonagh, Parisot, Slabaugh, "DeepLPF: Deep Local Parametric Filters for Image
Enhancement", CVPR 2020.

A U-Net backbone produces an image estimate ``Y1`` and a feature map. Three small regression
heads read the features (and the current image) and predict the parameters of spatially local
filters with a closed form:

- a cubic polynomial filter per colour channel in (row, column, intensity), added to ``Y1``
  (``Y2 = clamp(Y1 + P(x, y, Y1))``);
- graduated filters (a linear ramp across three parallel lines, optionally inverted) and
- elliptical filters (a radial ramp inside a rotated ellipse), both multiplicative scale maps.

The scale maps of each type are multiplied together, the two types added, and the result
scales ``Y2``; the output is ``clamp(Y1 + clamp(Y2 * (S_grad + S_ell)))``, as in the released
model. This implementation is vectorised over the batch and runs on any device.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.archs.arch_util import crop_back, pad_to_multiple
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["DeepLPF", "cubic_filter", "elliptical_scale_map", "graduated_scale_map"]

GRADUATED_PARAMS = 8  # inversion flag, slope, offset, top and bottom distances, 3 scales
ELLIPTICAL_PARAMS = 8  # centre row/column, two semi-axes, angle, 3 scales
CUBIC_TERMS = 20  # monomials x^a y^b i^c with a + b + c <= 3
MAX_SCALE = 2.0
EPS = 1e-7


def unit_tanh(x: torch.Tensor) -> torch.Tensor:
    """Tanh rescaled to (0, 1)."""
    return 0.5 * (torch.tanh(x) + 1)


def binary_straight_through(x: torch.Tensor) -> torch.Tensor:
    """``1[x > 0]`` forward; gradient of ``clamp((x + 1) / 2, 0, 1)`` backward."""
    soft = ((x + 1) / 2).clamp(0, 1)
    return (x > 0).to(x.dtype) + soft - soft.detach()


def normalised_grid(
    height: int, width: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates in [0, 1): shapes H x 1 and 1 x W."""
    rows = torch.arange(height, device=like.device, dtype=like.dtype) / height
    cols = torch.arange(width, device=like.device, dtype=like.dtype) / width
    return rows[:, None], cols[None, :]


def cubic_filter(image: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Add a per-channel cubic polynomial in (row, column, intensity) to ``image``.

    Args:
        image: B x 3 x H x W.
        coefficients: B x 3 x 20, one coefficient per monomial ``x^a y^b i^c`` with
            a + b + c <= 3, ordered by a, then b, then c (ascending); x is the row and y the
            column coordinate, both in [0, 1), and i the channel's intensity.

    Returns:
        ``clamp(image + P(x, y, image), 0, 1)``, B x 3 x H x W.
    """
    x, y = normalised_grid(*image.shape[-2:], like=image)
    x_powers = [torch.ones_like(x), x, x * x, x * x * x]
    y_powers = [torch.ones_like(y), y, y * y, y * y * y]
    i_powers = [torch.ones_like(image), image, image * image, image * image * image]
    polynomial = torch.zeros_like(image)
    term = 0
    for a in range(4):
        for b in range(4 - a):
            for c in range(4 - a - b):
                weight = coefficients[:, :, term, None, None]
                polynomial = polynomial + weight * (x_powers[a] * y_powers[b]) * i_powers[c]
                term += 1
    return (image + polynomial).clamp(0, 1)


def graduated_scale_map(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Product of graduated filters' scale maps.

    Args:
        params: B x F x 8 raw head outputs per filter: inversion flag, slope ``m``, offset ``c``
            of the central line ``y = m x + c``, distances of the top and bottom lines to it,
            scales for R, G, B.

    Returns:
        B x 3 x H x W scales in [0, 2]. Along the direction across the lines, each filter's
        effect ramps linearly from 100% (scale ``s``) at the top line through 50% at the
        central line to 0% (scale 1) at the bottom line; the inversion flag swaps the sides.
    """
    x, y = normalised_grid(height, width, like=params)
    p = params[..., None, None]  # B x F x 8 x 1 x 1
    invert = binary_straight_through(p[:, :, 0])
    slope = p[:, :, 1]
    offset = unit_tanh(p[:, :, 2])
    top = unit_tanh(p[:, :, 3]) + EPS
    bottom = unit_tanh(p[:, :, 4]) + EPS
    scales = MAX_SCALE * unit_tanh(p[:, :, 5:8])  # B x F x 3 x 1 x 1

    distance = y - (slope * x + offset)  # B x F x H x W, signed, along the column axis
    effect = 0.5 + 0.5 * ((distance / top).clamp(0, 1) - (-distance / bottom).clamp(0, 1))
    effect = invert * effect + (1 - invert) * (1 - effect)
    maps = 1 + (scales - 1) * effect[:, :, None]  # B x F x 3 x H x W
    return maps.prod(dim=1).clamp(0, MAX_SCALE)


def elliptical_scale_map(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Product of elliptical filters' scale maps.

    Args:
        params: B x F x 8 raw head outputs per ellipse: centre row and column, semi-axes along
            its own axes, rotation angle, scales for R, G, B.

    Returns:
        B x 3 x H x W scales in [0, 2]. Each ellipse scales by ``s`` at its centre, decaying
        linearly with the normalised elliptical radius to 1 on its boundary and outside.
    """
    x, y = normalised_grid(height, width, like=params)
    p = params[..., None, None]
    centre_x = unit_tanh(p[:, :, 0])
    centre_y = unit_tanh(p[:, :, 1])
    axis_a = unit_tanh(p[:, :, 2]) + EPS
    axis_b = unit_tanh(p[:, :, 3]) + EPS
    angle = math.pi * unit_tanh(p[:, :, 4])
    scales = MAX_SCALE * unit_tanh(p[:, :, 5:8])

    dx, dy = x - centre_x, y - centre_y
    cos, sin = torch.cos(angle), torch.sin(angle)
    along_a = (dx * cos + dy * sin) / axis_a
    along_b = (dy * cos - dx * sin) / axis_b
    radius = torch.sqrt(along_a**2 + along_b**2 + EPS)  # 1 on the ellipse boundary
    effect = F.relu(1 - radius)
    maps = 1 + (scales - 1) * effect[:, :, None]
    return maps.prod(dim=1).clamp(0, MAX_SCALE)


class ReflectConv3x3(nn.Conv2d):
    """3x3 convolution on a reflect-padded input (replicate on 1-pixel-wide maps)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        return super().forward(F.pad(x, (1, 1, 1, 1), mode=mode))


class DoubleConv(nn.Sequential):
    """Two reflect-padded 3x3 convolutions, each followed by LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ReflectConv3x3(in_channels, out_channels),
            nn.LeakyReLU(),
            ReflectConv3x3(out_channels, out_channels),
            nn.LeakyReLU(),
        )


class UNetBackbone(nn.Module):
    """U-Net (max-pool down, nearest up + 1x1 conv) returning ``Y1`` and features.

    ``Y1`` (B x 3 x H x W) is a residual on the input; the features (B x ``feature_channels``
    x H x W) come from a separate double conv on the last decoder stage.
    """

    def __init__(self, widths: Sequence[int], feature_channels: int) -> None:
        super().__init__()
        widths = list(widths)
        self.encoder = nn.ModuleList()
        channels = 3
        for width in widths:
            self.encoder.append(DoubleConv(channels, width))
            channels = width
        self.bottleneck = DoubleConv(channels, channels)
        self.up_convs = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for skip in reversed(widths):
            self.up_convs.append(nn.Conv2d(channels, channels, 1))
            self.decoder.append(DoubleConv(channels + skip, skip))
            channels = skip
        self.image_head = DoubleConv(channels, 3)
        self.feature_head = DoubleConv(channels, feature_channels)
        self.multiple = 2 ** len(widths)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, size = pad_to_multiple(image, self.multiple)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up_conv, stage, skip in zip(self.up_convs, self.decoder, reversed(skips)):
            x = up_conv(F.interpolate(x, scale_factor=2, mode="nearest"))
            x = stage(torch.cat([x, skip], dim=1))
        x = crop_back(x, size)
        return image + self.image_head(x), self.feature_head(x)


class FilterParameterHead(nn.Module):
    """Regress filter parameters from ``[features, image]`` resized to ``size x size``.

    Four stride-2 3x3 conv + LeakyReLU layers with 2x2 max-pooling between them, global
    average pooling, dropout and a linear layer to ``num_params`` outputs (B x num_params).
    """

    def __init__(
        self, in_channels: int, channels: int, num_params: int, size: int, dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(4):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += [
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=2, padding=1),
                nn.LeakyReLU(),
            ]
        self.body = nn.Sequential(
            *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)
        )
        self.fc = nn.Linear(channels, num_params)
        self.size = size

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, image], dim=1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.fc(self.body(x))


@ARCH_REGISTRY.register()
class DeepLPF(nn.Module):
    """DeepLPF: U-Net backbone plus cubic, graduated and elliptical parametric filters.

    Args:
        widths: encoder widths of the U-Net; a bottleneck of the last width follows
            (paper: 16/32/64/128). The input is padded to a multiple of ``2 ** len(widths)``.
        feature_channels: backbone feature channels given to the heads, which read them
            together with the 3 image channels (paper: 61, i.e. 64 with the image).
        head_channels: width of the parameter-regression heads (paper: 64).
        head_size: side to which the heads resize their input (paper: 300); at least 64.
        num_graduated_filters: graduated filters (paper: 3).
        num_elliptical_filters: elliptical filters (paper: 3).
        dropout: dropout before each head's linear layer (paper: 0.5).

    Input: low-light / under-exposed image ``B x 3 x H x W`` in [0, 1], any size. Output:
    enhanced image ``B x 3 x H x W`` in [0, 1]. The default configuration has 1,756,382
    parameters (the released model: 1,769,347, of which 53,568 are never used in its forward).
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        feature_channels: int = 61,
        head_channels: int = 64,
        head_size: int = 300,
        num_graduated_filters: int = 3,
        num_elliptical_filters: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if head_size < 64:
            raise ValueError(f"DeepLPF: head_size must be at least 64, got {head_size}.")
        if num_graduated_filters < 1 or num_elliptical_filters < 1:
            raise ValueError(
                "DeepLPF: num_graduated_filters and num_elliptical_filters must be >= 1, got "
                f"{num_graduated_filters} and {num_elliptical_filters}."
            )
        self.num_graduated_filters = num_graduated_filters
        self.num_elliptical_filters = num_elliptical_filters
        self.backbone = UNetBackbone(widths, feature_channels)
        head_in = feature_channels + 3

        def head(num_params: int) -> FilterParameterHead:
            return FilterParameterHead(head_in, head_channels, num_params, head_size, dropout)

        self.cubic_head = head(3 * CUBIC_TERMS)
        self.graduated_head = head(GRADUATED_PARAMS * num_graduated_filters)
        self.elliptical_head = head(ELLIPTICAL_PARAMS * num_elliptical_filters)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        estimate, features = self.backbone(image)
        # The closed-form filters are evaluated in float32 even under autocast: the cubic
        # terms and the products of scale maps lose too much precision in half types.
        estimate = estimate.float()
        coefficients = self.cubic_head(features, estimate).float().view(b, 3, CUBIC_TERMS)
        cubic = cubic_filter(estimate, coefficients)

        graduated = self.graduated_head(features, cubic).float()
        graduated = graduated.view(b, self.num_graduated_filters, GRADUATED_PARAMS)
        elliptical = self.elliptical_head(features, cubic).float()
        elliptical = elliptical.view(b, self.num_elliptical_filters, ELLIPTICAL_PARAMS)
        scale = graduated_scale_map(graduated, h, w) + elliptical_scale_map(elliptical, h, w)
        filtered = (cubic * scale.clamp(0, MAX_SCALE)).clamp(0, 1)
        return (estimate + filtered).clamp(0, 1)
