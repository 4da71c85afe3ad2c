"""Mean absolute error."""

from __future__ import annotations

import torch

from diffsr.losses.loss_util import ElementwiseLoss
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["L1Loss"]


@LOSS_REGISTRY.register()
class L1Loss(ElementwiseLoss):
    """``loss_weight * reduce(|pred - target|)``."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(loss_weight=loss_weight, reduction=reduction)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs()
