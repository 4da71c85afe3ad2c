"""Scaling of the gradient that flows back through a float16 prior.

DiffLoss reaches the prior's outputs with tiny gradients: a mean over B x 3 x H x W elements,
times gamma. A float16 backward flushes most of them below its smallest subnormal (6e-8) to
zero, so the gradient that comes out at the input is mostly underflow error (measured in
docs/performance.md). The cure is the one mixed-precision training uses for weight gradients:
multiply the gradient by a scale S on its way into the float16 backward and divide the input
gradient by S on its way out. S is a power of two, so both multiplications are exact and only
the range moves.

S is chosen in each backward from the gradients that arrive: the largest magnitude is brought
to ``2 ** target_exponent``. If the float16 backward still overflows (a non-finite input
gradient), that gradient is replaced by zeros, a warning is logged and ``target_exponent`` is
lowered for the following calls, as ``torch.amp.GradScaler`` backs off. A non-finite gradient
that arrives from upstream passes through untouched, so that the trainer's GradScaler sees it.
Choosing S and the overflow check each read one number back from the device: two
synchronisations per backward on CUDA, milliseconds against a DiffLoss step of tens.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["GradScaling", "scaled_backward"]

logger = logging.getLogger(__name__)


@dataclass
class GradScaling:
    """What the prior keeps across calls: the target of the largest scaled gradient, and the
    number of overflows so far."""

    target_exponent: int = 0
    backoff: int = 4
    overflows: int = 0

    def choose_scale(self, largest: float) -> float:
        """The power of two that brings ``largest`` (the largest |g|) to
        ``2 ** target_exponent``; 1 when it is zero or not finite."""
        if not math.isfinite(largest) or largest == 0.0:
            return 1.0
        return 2.0 ** (self.target_exponent - math.ceil(math.log2(largest)))

    def record_overflow(self, scale: float) -> None:
        self.overflows += 1
        self.target_exponent -= self.backoff
        logger.warning(
            "float16 prior: the input gradient overflowed (scale 2^%d); it was set to zero for "
            "this step and the scale target lowered to 2^%d. Frequent overflows: use 'dtype: "
            "bfloat16' or float32.",
            round(math.log2(scale)),
            self.target_exponent,
        )


class _Link:
    """One forward call's scale, chosen at its outputs and used at its input (per call, so
    several calls before one backward, e.g. ``num_draws`` > 1, keep their own scales)."""

    def __init__(self, scaling: GradScaling) -> None:
        self.scaling = scaling
        self.scale = 1.0
        self.incoming_finite = True


class _ScaleOutputGrads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, link: _Link, *outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.link = link
        return tuple(o.view_as(o) for o in outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        link = ctx.link
        present = [g.detach().abs().amax().float() for g in grads if g is not None]
        largest = torch.stack(present).amax().item() if present else 0.0  # NaN and inf propagate
        link.incoming_finite = math.isfinite(largest)
        link.scale = link.scaling.choose_scale(largest)
        return (None, *(None if g is None else g * link.scale for g in grads))


class _UnscaleInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, link: _Link, x: torch.Tensor) -> torch.Tensor:
        ctx.link = link
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        link = ctx.link
        grad = grad / link.scale
        # An overflow of this backward is handled here. A non-finite gradient that arrived from
        # upstream (say, the trainer's GradScaler overflowed) passes through, for it to see.
        if link.incoming_finite and not torch.isfinite(grad).all():
            link.scaling.record_overflow(link.scale)
            grad = torch.zeros_like(grad)
        return None, grad


def scaled_backward(
    run: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    x: torch.Tensor,
    scaling: GradScaling,
) -> tuple[torch.Tensor, ...]:
    """``run(x)`` unchanged in forward; in backward the gradients of its outputs are multiplied
    by one power of two before they enter ``run``'s backward, and the gradient of ``x`` is
    divided by it afterwards (float32 tensors at both ends)."""
    link = _Link(scaling)
    return _ScaleOutputGrads.apply(link, *run(_UnscaleInputGrad.apply(link, x)))
