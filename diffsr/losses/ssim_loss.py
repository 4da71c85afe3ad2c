"""Structural-similarity loss, 1 - SSIM."""

from __future__ import annotations

import torch
import torch.nn as nn

from diffsr.losses.loss_util import check_reduction, check_same_shape, reduce_loss
from diffsr.metrics.metric_util import ssim_map_pt
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["SSIMLoss"]


@LOSS_REGISTRY.register()
class SSIMLoss(nn.Module):
    """``loss_weight * reduce(1 - SSIM map)`` for B x C x H x W images in [0, 1].

    The SSIM map is that of :func:`diffsr.metrics.calculate_ssim_pt` (11 x 11 Gaussian window,
    sigma 1.5, valid region, B x C x (H - 10) x (W - 10)); with ``reduction='mean'`` the loss is
    ``1 - mean SSIM`` of the batch. Images must be at least 11 x 11.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, type(self).__name__)
        ssim_map = ssim_map_pt(pred, target, data_range=1.0)
        return self.loss_weight * reduce_loss(1.0 - ssim_map, self.reduction)

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, reduction={self.reduction!r}"
