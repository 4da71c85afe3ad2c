"""L1 + SSIM loss, as EfDeRain is trained."""

from __future__ import annotations

import torch
from torch import nn

from diffsr.losses.loss_util import check_reduction, check_same_shape
from diffsr.metrics.metric_util import ssim_map_pt
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["L1SSIMLoss"]


def reduce_map(loss_map: torch.Tensor, reduction: str) -> torch.Tensor:
    """'mean' / 'sum' over all elements, or 'none': mean per sample (shape B)."""
    if reduction == "mean":
        return loss_map.mean()
    if reduction == "sum":
        return loss_map.sum()
    return loss_map.flatten(1).mean(dim=1)


@LOSS_REGISTRY.register()
class L1SSIMLoss(nn.Module):
    """``loss_weight * (l1_weight * |pred - target| + ssim_weight * (1 - SSIM(pred, target)))``.

    The training loss of EfDeRain (Guo et al., AAAI 2021): its released code minimises
    ``L1 - 0.2 SSIM``, which has the same gradients as the default here (``1 - SSIM`` only
    adds a constant so that the loss is non-negative). SSIM is that of
    :func:`diffsr.metrics.metric_util.ssim_map_pt` (11 x 11 Gaussian window, sigma 1.5, valid
    region, data range 1), so images must be at least 11 x 11; the released code zero-pads the
    window instead, which only changes the border.

    ``pred``, ``target``: B x C x H x W in [0, 1]. ``reduction``: 'mean' (default) or 'sum'
    over the elements of each term, or 'none' for a per-sample loss of shape B.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        l1_weight: float = 1.0,
        ssim_weight: float = 0.2,
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.l1_weight = l1_weight
        self.ssim_weight = ssim_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_same_shape(pred, target, type(self).__name__)
        l1 = reduce_map((pred - target).abs(), self.reduction)
        dissimilarity = reduce_map(1 - ssim_map_pt(pred, target, data_range=1.0), self.reduction)
        return self.loss_weight * (self.l1_weight * l1 + self.ssim_weight * dissimilarity)

    def extra_repr(self) -> str:
        return (
            f"loss_weight={self.loss_weight}, reduction={self.reduction!r}, "
            f"l1_weight={self.l1_weight}, ssim_weight={self.ssim_weight}"
        )
