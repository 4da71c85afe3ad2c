"""DeepLPF: deep local parametric filters for image enhancement.

Moran, Marza, McDonagh, Parisot, Slabaugh, "DeepLPF: Deep Local Parametric Filters for Image
Enhancement", CVPR 2020. This module computes the function of the authors' release
(sjmoran/DeepLPF, ``model.py`` and ``unet.py``, class ``DeepLPFNet``), with one correction: the
release evaluates every filter with the parameters of sample 0 of the batch (and adds the cubic
filter to sample 0 only), so it is right for batches of one only; here every sample gets its
own filters, and sample ``b`` of a batch equals the release run on that sample alone.

The backbone, a U-Net, returns a residual image estimate ``Y1``; one reflect-padded 3x3 conv
maps it to 64 channels, of which 0-2 are the image ``I`` the filters act on and 3-63 the
features ``F``. Three regression heads read ``[F, image]`` resized to 300 x 300 and predict:

- a cubic polynomial per colour channel in (row, column, intensity):
  ``Y2 = clamp(I + P(x, y, I), 0, 1)``;
- graduated filters (from ``[F, Y2]``), a smooth ramp across a line ``y = m x + c`` per filter
  and channel, see :func:`graduated_scale_map`;
- elliptical filters (from ``[F, Y2]``), a radial ramp inside a rotated ellipse, see
  :func:`elliptical_scale_map`.

The scale maps of each type are multiplied over the filters, the two types added, and the
output is ``clamp(I + clamp(Y2 * clamp(S_grad + S_ell, 0, 2), 0, 1), 0, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["DeepLPF", "cubic_filter", "elliptical_scale_map", "graduated_scale_map"]

FILTER_PARAMS = 8  # per graduated or elliptical filter: 5 geometry values + 3 channel scales
CUBIC_TERMS = 20  # monomials x^a y^b i^c with a + b + c <= 3
MAX_SCALE = 2.0
# The release's small constants: centre/axis offsets and the acos clamp of the ellipses, the
# lower bound of the graduated top distance, and the eps of the distance in the elliptical ramp.
EPS_PARAM = 1e-10
EPS_ACOS = 1e-7
EPS_DISTANCE = 1e-7
# Monomial exponents (a, b, c) of x^a y^b i^c in the release's coefficient order:
# x^3, x^2 y, x^2 i, x^2, x y^2, x y i, x y, x i^2, x i, x, y^3, ..., i, 1.
CUBIC_EXPONENTS = tuple(
    (a, b, c)
    for a in range(3, -1, -1)
    for b in range(3 - a, -1, -1)
    for c in range(3 - a - b, -1, -1)
)


def unit_tanh(x: torch.Tensor) -> torch.Tensor:
    """Tanh rescaled to (0, 1) (the release's ``tanh01``)."""
    return 0.5 * (torch.tanh(x) + 1)


def normalised_grid(
    height: int, width: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (``x``) and column (``y``) coordinates ``index / size`` in [0, 1): H x 1 and 1 x W."""
    rows = torch.arange(height, device=like.device, dtype=like.dtype) / height
    cols = torch.arange(width, device=like.device, dtype=like.dtype) / width
    return rows[:, None], cols[None, :]


def cubic_filter(image: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Add a per-channel cubic polynomial in (row, column, intensity) to ``image``.

    Args:
        image: B x 3 x H x W.
        coefficients: B x 3 x 20, one coefficient per monomial ``x^a y^b i^c`` (a + b + c <= 3)
            in the order of ``CUBIC_EXPONENTS`` (the release's); x is the row and y the column
            coordinate (``index / size``), i the channel's intensity.

    Returns:
        ``clamp(image + P(x, y, image), 0, 1)``, B x 3 x H x W.
    """
    x, y = normalised_grid(*image.shape[-2:], like=image)
    polynomial = torch.zeros_like(image)
    for term, (a, b, c) in enumerate(CUBIC_EXPONENTS):
        monomial = (x**a * y**b) * image**c
        polynomial = polynomial + coefficients[:, :, term, None, None] * monomial
    return (image + polynomial).clamp(0, 1)


def _split_filter_params(
    params: torch.Tensor, num_filters: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Split a head's B x 8F output in the release's order.

    Returns five B x F x 1 x 1 geometry tensors (the release orders its outputs by kind, then
    filter) and the B x F x 3 x 1 x 1 channel scales (by filter, then channel).
    """
    b = params.shape[0]
    if params.shape[1] != FILTER_PARAMS * num_filters:
        raise ValueError(
            f"DeepLPF: expected {FILTER_PARAMS * num_filters} filter parameters for "
            f"{num_filters} filters, got {params.shape[1]}."
        )
    geometry = params[:, : 5 * num_filters].reshape(b, 5, num_filters, 1, 1).unbind(1)
    scales = params[:, 5 * num_filters :].reshape(b, num_filters, 3, 1, 1)
    return list(geometry), scales


def graduated_scale_map(
    params: torch.Tensor, height: int, width: int, num_filters: int
) -> torch.Tensor:
    """Product of the release's graduated filters' scale maps.

    Args:
        params: B x 8F raw head outputs: F inversion flags (inverted when > 0), F slopes ``m``,
            F lower bounds of the top distance, F top distances ``t``, F bottom distances
            ``u`` (all but the slopes through ``unit_tanh``; ``t`` is clamped to
            [bound, 1] and ``u`` to [0, t]), then 3 scales ``s = 2 unit_tanh`` per filter.

    Returns:
        B x 3 x H x W scales in [0, 2]. Per filter and channel, with ``d1 = unit_tanh(t cos
        atan m)``, ``d2 = unit_tanh(u cos atan m)`` and the ramp ``r = unit_tanh(y - (m x + t +
        d1))`` in (0, 1): ``s + (1 - s)(1/d1 + 1/d2) r / 2`` when inverted, else
        ``1 + g1 r + (s - 1) r / (2 d2)`` with ``g1 = (1 - s) / (2 d1)`` if ``s >= 1`` and
        ``(s - 1) / (2 d1)`` otherwise; clamped to [1, 2] when ``s >= 1``, to [0, 1] otherwise.
    """
    x, y = normalised_grid(height, width, like=params)
    (flag, slope, bound, top, bottom), scale = _split_filter_params(params, num_filters)
    inverted = (flag > 0)[:, :, None]
    bound = unit_tanh(bound) + EPS_PARAM
    # the release bounds these distances with detached (``.data``) tensors
    top = unit_tanh(top).clamp(min=bound.detach()).clamp(max=1.0)
    bottom = unit_tanh(bottom).clamp(min=0).clamp(max=top.detach())
    cos = torch.cos(torch.atan(slope))
    d1 = unit_tanh(top * cos)[:, :, None]
    d2 = unit_tanh(bottom * cos)[:, :, None]
    ramp = unit_tanh(y - (slope * x + top + d1[:, :, 0]))[:, :, None]  # B x F x 1 x H x W

    scale = MAX_SCALE * unit_tanh(scale)
    above_one = scale >= 1
    middle = torch.where(above_one, (scale - 1) / 2 + 1, (1 - scale) / 2 + scale)
    grad1 = torch.where(inverted | above_one, (middle - scale) / d1, (middle - 1) / d1)
    grad2 = torch.where(inverted, (1 - middle) / d2, (scale - middle) / d2)
    base = torch.where(inverted, scale, torch.ones_like(scale))
    low = above_one.to(scale.dtype)
    maps = torch.clamp(base + grad1 * ramp + grad2 * ramp, low, low + 1)  # B x F x 3 x H x W
    return maps.prod(dim=1).clamp(0, MAX_SCALE)


def elliptical_scale_map(
    params: torch.Tensor, height: int, width: int, num_filters: int
) -> torch.Tensor:
    """Product of the release's elliptical filters' scale maps.

    Args:
        params: B x 8F raw head outputs: F centre rows ``h``, F centre columns ``k``, F
            semi-axes ``a``, F semi-axes ``b`` (all ``unit_tanh``), F angles ``A = pi
            unit_tanh``, then 3 scales ``s = 2 unit_tanh`` per filter.

    Returns:
        B x 3 x H x W scales in [0, 2]. Per filter and channel, with ``dx = x - h``,
        ``dy = y - k``, ``theta = acos(dy / |(dx, dy)|) - A`` and the ellipse radius
        ``rho = a b / sqrt(a^2 sin^2 theta + b^2 cos^2 theta)`` in that direction: inside the
        ellipse of semi-axes (a, b) rotated by theta, ``s + (1 - s) |(dx, dy)| / rho``,
        outside 1, clamped to [0, 2]. As in the release, the blue channel of the second
        filter measures its ellipse with the third filter's ``b`` (when F >= 3).
    """
    x, y = normalised_grid(height, width, like=params)
    (centre_x, centre_y, axis_a, axis_b, angle), scale = _split_filter_params(params, num_filters)
    centre_x = unit_tanh(centre_x) + EPS_PARAM
    centre_y = unit_tanh(centre_y) + EPS_PARAM
    axis_a = unit_tanh(axis_a) + EPS_PARAM
    axis_b = unit_tanh(axis_b) + EPS_PARAM
    angle = unit_tanh(angle) * math.pi + EPS_PARAM
    scale = unit_tanh(scale) * MAX_SCALE + EPS_PARAM  # B x F x 3 x 1 x 1

    dx, dy = x - centre_x, y - centre_y  # B x F x H x W
    cosine = dy / torch.sqrt(dx**2 + dy**2 + EPS_PARAM)
    theta = torch.acos(torch.clamp(cosine, -1 + EPS_ACOS, 1 - EPS_ACOS)) - angle
    sin, cos = torch.sin(theta), torch.cos(theta)
    radius = (axis_a * axis_b) / torch.sqrt(axis_a**2 * sin**2 + axis_b**2 * cos**2 + EPS_PARAM)

    axis_b = axis_b[:, :, None].expand(-1, -1, 3, -1, -1)  # per channel
    if num_filters >= 3:
        axis_b = torch.cat(
            [axis_b[:, :1], torch.cat([axis_b[:, 1:2, :2], axis_b[:, 2:3, 2:]], 2), axis_b[:, 2:]],
            dim=1,
        )
    dx, dy, sin, cos, radius = (t[:, :, None] for t in (dx, dy, sin, cos, radius))
    inside = (dx * cos + dy * sin) ** 2 / axis_a[:, :, None] ** 2
    inside = inside + (dx * sin - dy * cos) ** 2 / axis_b**2 < 1
    ramp = torch.sqrt(dx**2 + dy**2 + EPS_DISTANCE) * (1 - scale) / radius + scale
    maps = torch.where(inside, ramp, torch.ones_like(ramp)).clamp(0, MAX_SCALE)
    return maps.prod(dim=1).clamp(0, MAX_SCALE)


class ReflectConv3x3(nn.Conv2d):
    """3x3 convolution on a reflect-padded input (replicate on 1-pixel-wide maps, which the
    release cannot process)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        return super().forward(F.pad(x, (1, 1, 1, 1), mode=mode))


class DoubleConv(nn.Sequential):
    """Two reflect-padded 3x3 convolutions, each followed by LeakyReLU (the release's
    ``LocalNet``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ReflectConv3x3(in_channels, out_channels),
            nn.LeakyReLU(),
            ReflectConv3x3(out_channels, out_channels),
            nn.LeakyReLU(),
        )


class UNetBackbone(nn.Module):
    """The release's U-Net and output conv: ``image`` -> (``I``, ``F``).

    Encoder double convs with 2x2 max-pooling (floor), a bottleneck double conv, and per
    decoder level a nearest 2x upsampling, a 1x1 conv, zero padding of one column on the left
    and/or one row at the bottom where the skip is larger (odd sizes), concatenation with the
    skip and a double conv; a double conv to 3 channels plus the input gives ``Y1``, and a
    reflect-padded 3x3 conv maps ``Y1`` to ``3 + feature_channels`` channels, split into the
    image ``I`` (B x 3 x H x W) and the features ``F`` (B x feature_channels x H x W).
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
        self.output_conv = ReflectConv3x3(3, 3 + feature_channels)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up_conv, stage, skip in zip(self.up_convs, self.decoder, reversed(skips)):
            x = up_conv(F.interpolate(x, scale_factor=2, mode="nearest"))
            pad_h, pad_w = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if pad_h or pad_w:
                x = F.pad(x, (pad_w, 0, 0, pad_h))
            x = stage(torch.cat([x, skip], dim=1))
        output = self.output_conv(image + self.image_head(x))
        return output[:, :3], output[:, 3:]


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


def _exact_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is a half type: the closed-form filters (cubic terms, products
    of scale maps) lose too much precision in float16/bfloat16; float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@ARCH_REGISTRY.register(name="DeepLPFNet")
@ARCH_REGISTRY.register()
class DeepLPF(nn.Module):
    """DeepLPF as released (registry names ``DeepLPF`` and the authors' ``DeepLPFNet``), with
    per-sample filters in a batch (the release uses sample 0's for all).

    Args:
        widths: encoder widths of the U-Net; a bottleneck of the last width follows
            (release: 16/32/64/128).
        feature_channels: feature channels of the output conv after the image's 3 (release: 61,
            one 3 -> 64 conv); the heads read them with the 3 image channels.
        head_channels: width of the parameter-regression heads (release: 64).
        head_size: side to which the heads resize their input (release: 300); at least 64.
        num_graduated_filters: graduated filters (release: 3).
        num_elliptical_filters: elliptical filters (release: 3).
        dropout: dropout before each head's linear layer (release: 0.5).

    The release's ``DeepLPFNet()`` takes no arguments; the defaults are its configuration.

    Input: low-light / under-exposed image ``B x 3 x H x W`` in [0, 1], any size (the release
    needs H, W >= 2**(len(widths) + 1), 32, for its reflection padding; smaller sizes pad by
    replication at 1-pixel levels). Output: enhanced image ``B x 3 x H x W`` in [0, 1]. The
    default configuration has 1,715,779 parameters: the release's 1,769,347 less 53,568 in
    modules its forward never uses (``unet.conv1``-``conv3``, ``unet.local_net``), which the
    converter drops.
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
        self.graduated_head = head(FILTER_PARAMS * num_graduated_filters)
        self.elliptical_head = head(FILTER_PARAMS * num_elliptical_filters)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        estimate, features = self.backbone(image)
        estimate = _exact_dtype(estimate)
        coefficients = _exact_dtype(self.cubic_head(features, estimate))
        cubic = cubic_filter(estimate, coefficients.view(b, 3, CUBIC_TERMS))
        graduated = _exact_dtype(self.graduated_head(features, cubic))
        elliptical = _exact_dtype(self.elliptical_head(features, cubic))
        scale = graduated_scale_map(graduated, h, w, self.num_graduated_filters)
        scale = scale + elliptical_scale_map(elliptical, h, w, self.num_elliptical_filters)
        filtered = (cubic * scale.clamp(0, MAX_SCALE)).clamp(0, 1)
        return (estimate + filtered).clamp(0, 1)
