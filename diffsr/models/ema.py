"""Exponential moving average of a network's weights (``train.ema_decay``)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights``; buffers are copied as they are."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self.module = copy.deepcopy(net).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        ema_params = dict(self.module.named_parameters())
        for name, param in net.named_parameters():
            ema_params[name].lerp_(param.detach(), 1.0 - self.decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in net.named_buffers():
            ema_buffers[name].copy_(buffer)
