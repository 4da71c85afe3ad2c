"""Charbonnier loss, a differentiable variant of L1."""

from __future__ import annotations

import torch

from diffsr.losses.loss_util import ElementwiseLoss
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["CharbonnierLoss"]


@LOSS_REGISTRY.register()
class CharbonnierLoss(ElementwiseLoss):
    """``loss_weight * reduce(sqrt((pred - target)^2 + eps))``.

    ``eps`` is added under the square root as is (BasicSR's convention, default 1e-12), so the
    loss of identical images is ``sqrt(eps)`` per element, not 0.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", eps: float = 1e-12):
        super().__init__(loss_weight=loss_weight, reduction=reduction)
        if eps <= 0:
            raise ValueError(f"CharbonnierLoss: eps must be > 0, got {eps!r}.")
        self.eps = eps

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target) ** 2 + self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
