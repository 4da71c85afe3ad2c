"""AOD-Net: All-in-One Dehazing Network (ICCV 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["AODNet"]


@ARCH_REGISTRY.register()
class AODNet(nn.Module):
    """AOD-Net (Li et al., "AOD-Net: All-in-One Dehazing Network", ICCV 2017).

    Reformulates the scattering model I = J t + A (1 - t) as J = K I - K + b with a single
    per-pixel map K(I) estimated by five small conv + ReLU layers with multi-scale
    concatenations: conv1 (1x1) on I, conv2 (3x3) on conv1, conv3 (5x5) on [conv1, conv2],
    conv4 (7x7) on [conv2, conv3], conv5 (3x3) on [conv1, conv2, conv3, conv4]. The output is
    ReLU(K I - K + b). The default configuration has 1,761 parameters.

    Args:
        image_channels: channels of the input/output image and of every hidden layer.
        bias_constant: the constant b of the reformulated model (the paper uses 1).

    The authors' PyTorch class ``AODnet`` takes no constructor arguments; it is not a
    registry alias because it differs from ``AODNet`` only in case (name suggestions for
    misspelled types are case-insensitive).

    Input: B x image_channels x H x W in [0, 1], any H, W. Output: B x image_channels x H x W,
    the dehazed image, non-negative.
    """

    def __init__(self, image_channels: int = 3, bias_constant: float = 1.0) -> None:
        super().__init__()
        c = image_channels
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * c, c, 5, padding=2)
        self.conv4 = nn.Conv2d(2 * c, c, 7, padding=3)
        self.conv5 = nn.Conv2d(4 * c, c, 3, padding=1)
        self.bias_constant = bias_constant

    def estimate_k(self, x: torch.Tensor) -> torch.Tensor:
        """The K map, B x C x H x W, non-negative."""
        x1 = F.relu(self.conv1(x))
        x2 = F.relu(self.conv2(x1))
        x3 = F.relu(self.conv3(torch.cat([x1, x2], dim=1)))
        x4 = F.relu(self.conv4(torch.cat([x2, x3], dim=1)))
        return F.relu(self.conv5(torch.cat([x1, x2, x3, x4], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.estimate_k(x)
        return F.relu(k * x - k + self.bias_constant)
