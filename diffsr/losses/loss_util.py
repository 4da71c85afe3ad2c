"""Shared pieces of the pixel losses: reduction, optional per-pixel weights, input checks."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["REDUCTIONS", "ElementwiseLoss", "check_reduction", "check_same_shape", "reduce_loss"]

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}.")
    return reduction


def check_same_shape(pred: torch.Tensor, target: torch.Tensor, owner: str) -> None:
    # Broadcasting pred against a differently shaped target is almost always a bug, so refuse it.
    if pred.shape != target.shape:
        raise ValueError(
            f"{owner}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}."
        )


def reduce_loss(
    loss: torch.Tensor, reduction: str, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce an element-wise loss, optionally weighting each element first.

    ``weight`` must broadcast to ``loss`` (e.g. B x 1 x H x W for a B x C x H x W loss). With
    weights, ``'mean'`` is the weighted mean ``sum(w * loss) / sum(w)`` over all elements.
    """
    check_reduction(reduction)
    if weight is not None:
        try:
            weight = weight.expand_as(loss)
        except RuntimeError:
            raise ValueError(
                f"weight of shape {tuple(weight.shape)} does not broadcast to the loss shape "
                f"{tuple(loss.shape)}."
            ) from None
        loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight is None:
        return loss.mean()
    # An all-zero weight map means nothing to learn from: return 0 rather than NaN.
    return loss.sum() / weight.sum().clamp_min(torch.finfo(loss.dtype).tiny)


class ElementwiseLoss(nn.Module):
    """Base of losses that compare ``pred`` and ``target`` element by element.

    Subclasses implement :meth:`elementwise`; ``forward(pred, target, weight=None)`` checks shapes,
    applies the optional ``weight``, the reduction and ``loss_weight``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``pred``, ``target``: B x C x H x W; ``weight``: broadcastable to them, or None."""
        check_same_shape(pred, target, type(self).__name__)
        return self.loss_weight * reduce_loss(
            self.elementwise(pred, target), self.reduction, weight
        )

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, reduction={self.reduction!r}"
