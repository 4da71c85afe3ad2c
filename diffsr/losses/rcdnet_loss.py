"""RCDNet's stage-wise training loss on background and rain-layer estimates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffsr.losses.loss_util import check_reduction, check_same_shape
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["RCDNetLoss"]


def squared_error(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """MSE reduced by 'mean' / 'sum' over all elements, or 'none': mean per sample (shape B)."""
    check_same_shape(pred, target, "RCDNetLoss")
    error = (pred - target) ** 2
    if reduction == "mean":
        return error.mean()
    if reduction == "sum":
        return error.sum()
    return error.flatten(1).mean(dim=1)


@LOSS_REGISTRY.register()
class RCDNetLoss(nn.Module):
    """Stage-wise MSE of RCDNet (Wang et al., CVPR 2020) on backgrounds and rain layers.

    With the network's background estimates ``[B0, B1, ..., BS, B_final]`` and rain-layer
    estimates ``[R1, ..., RS]`` (``pred.rain_layers``), ground truth ``B`` and rainy input
    ``O`` (so the true rain layer is ``R = O - B``)::

        loss = background_stage_weight * sum_{s=0..S} MSE(B_s, B)
             + background_final_weight * MSE(B_final, B)
             + rain_stage_weight * sum_{s=1..S-1} MSE(R_s, R)
             + rain_final_weight * MSE(R_S, R)

    times ``loss_weight``. The defaults (0.1, 1, 0.1, 1) are those of the paper and its
    released training code. ``reduction``: 'mean' (default) or 'sum' over the elements of each
    term, or 'none' for a per-sample loss of shape B.

    ``multi_output = True`` and ``uses_input = True``: called as ``loss(pred, target, lq=lq)``
    with ``pred`` the :class:`~diffsr.archs.rcdnet_arch.RCDNetOutput` of :class:`RCDNet`
    passed on unchanged (a plain list has no ``rain_layers``; then the rain weights must be 0).
    """

    multi_output = True
    uses_input = True

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        background_stage_weight: float = 0.1,
        background_final_weight: float = 1.0,
        rain_stage_weight: float = 0.1,
        rain_final_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.background_stage_weight = background_stage_weight
        self.background_final_weight = background_final_weight
        self.rain_stage_weight = rain_stage_weight
        self.rain_final_weight = rain_final_weight

    def forward(
        self, pred: Sequence[torch.Tensor], target: torch.Tensor, lq: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``pred``: RCDNet output (S + 2 tensors); ``target``, ``lq``: B x 3 x H x W."""
        if isinstance(pred, torch.Tensor) or len(pred) < 2:
            raise ValueError(
                "RCDNetLoss needs RCDNet's list of background estimates [B0, ..., BS, B_final] "
                f"(the loss has multi_output = True); got a {type(pred).__name__}."
            )
        *stages, final = pred
        loss = self.background_final_weight * squared_error(final, target, self.reduction)
        for background in stages:
            loss = loss + self.background_stage_weight * squared_error(
                background, target, self.reduction
            )
        if self.rain_stage_weight or self.rain_final_weight:
            loss = loss + self.rain_loss(pred, target, lq)
        return self.loss_weight * loss

    def rain_loss(
        self, pred: Sequence[torch.Tensor], target: torch.Tensor, lq: torch.Tensor | None
    ) -> torch.Tensor:
        rain_layers = getattr(pred, "rain_layers", None)
        if not rain_layers:
            raise ValueError(
                "RCDNetLoss: the rain terms need the rain-layer estimates that RCDNet attaches to "
                "its output list (attribute 'rain_layers'); pass the network output on unchanged, "
                "or set rain_stage_weight and rain_final_weight to 0."
            )
        if lq is None:
            raise ValueError(
                "RCDNetLoss: the rain terms need the rainy input (call loss(pred, target, lq=lq)); "
                "or set rain_stage_weight and rain_final_weight to 0."
            )
        check_same_shape(lq, target, "RCDNetLoss (lq vs target)")
        rain = lq - target
        *stages, final = rain_layers
        loss = self.rain_final_weight * squared_error(final, rain, self.reduction)
        for layer in stages:
            loss = loss + self.rain_stage_weight * squared_error(layer, rain, self.reduction)
        return loss

    def extra_repr(self) -> str:
        return (
            f"loss_weight={self.loss_weight}, reduction={self.reduction!r}, "
            f"background_stage_weight={self.background_stage_weight}, "
            f"background_final_weight={self.background_final_weight}, "
            f"rain_stage_weight={self.rain_stage_weight}, "
            f"rain_final_weight={self.rain_final_weight}"
        )
