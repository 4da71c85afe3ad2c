"""How much each loss term pushes the restored image: gradient norms at the network's output.

``grad_share_<term> = ||d L_term / d output|| / ||d L_ref / d output||`` at the final output (the
restored image), where ``L_term`` is the weighted term (gamma included) and ``L_ref`` the pixel
term. A DiffLoss share of 0.01 means its gradient at the restored image is 1% of the pixel
loss's: a direct reading of what gamma does. Parts of a term on intermediate outputs of a
multi-output network (``output: all``) do not reach the final output and are not counted.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gradient_norm", "gradient_shares"]


def gradient_norm(value: torch.Tensor, output: torch.Tensor) -> float:
    """Euclidean norm of d value / d output (0 when ``value`` does not depend on it).

    ``value``: a scalar loss; ``output``: a network output (B x C x H x W) in its graph. The
    graph is kept for the training step's own backward.
    """
    if not value.requires_grad:
        return 0.0
    (grad,) = torch.autograd.grad(value, output, retain_graph=True, allow_unused=True)
    return 0.0 if grad is None else math.sqrt(float(grad.detach().double().square().sum()))


def gradient_shares(
    values: dict[str, torch.Tensor], output: torch.Tensor, reference: str = "pixel"
) -> dict[str, float]:
    """``{'grad_share_<name>': ratio}`` for every term but the reference (``pixel``, or the
    first term when there is none). A reference with no gradient gives ``nan`` ratios."""
    if len(values) < 2:
        return {}
    ref_name = reference if reference in values else next(iter(values))
    ref_norm = gradient_norm(values[ref_name], output)
    shares = {}
    for name, value in values.items():
        if name == ref_name:
            continue
        norm = gradient_norm(value, output)
        shares[f"grad_share_{name}"] = norm / ref_norm if ref_norm > 0 else math.nan
    return shares
