"""Losses. Every ``*_loss.py`` here is imported, registering its classes.

Convention (as BasicSR): ``build_loss(opt)(pred, target)`` returns a scalar tensor that is
differentiable in ``pred`` and already multiplied by the block's ``loss_weight``.
"""

from typing import Any

import torch.nn as nn

from diffsr.utils.registry import LOSS_REGISTRY, import_modules_with_suffix

__all__ = ["LOSS_REGISTRY", "build_loss"]

import_modules_with_suffix(__name__, "_loss")


def build_loss(opt: dict[str, Any]) -> nn.Module:
    """Build a loss from an option block ``{type: Name, loss_weight: w, **kwargs}``."""
    return LOSS_REGISTRY.build(opt)
