"""Per-sample Euclidean norm: the pixel term of the paper's Eq. 16 written with ||.||_2."""

from __future__ import annotations

import torch
import torch.nn as nn

from diffsr.losses.loss_util import check_reduction, check_same_shape
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["L2NormLoss"]


@LOSS_REGISTRY.register()
class L2NormLoss(nn.Module):
    """``loss_weight * reduce_b ||pred_b - target_b||_2``: the Euclidean norm of each sample's
    difference (all of C x H x W at once), then the batch mean (or sum, or none: (B,)).

    Not :class:`MSELoss` (a mean of squares): its gradient ``d / ||d||`` has unit norm per
    sample whatever the error, so a weight next to it means something else (docs/diffloss.md).
    Use it with DiffLoss's ``criterion: l2`` for Eq. 16 with the paper's norm throughout.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``pred``, ``target``: B x C x H x W; ``weight`` (broadcastable): the norm of
        ``sqrt(weight) * (pred - target)``, i.e. ``sqrt(sum(weight * d^2))`` per sample."""
        check_same_shape(pred, target, type(self).__name__)
        diff = pred - target
        if weight is not None:
            diff = diff * weight.expand_as(diff).sqrt()
        # vector_norm has a zero (not NaN) gradient where the difference is exactly zero
        norms = torch.linalg.vector_norm(diff.flatten(1), dim=1)
        if self.reduction == "mean":
            norms = norms.mean()
        elif self.reduction == "sum":
            norms = norms.sum()
        return self.loss_weight * norms

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, reduction={self.reduction!r}"
