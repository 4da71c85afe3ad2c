"""Restormer's mixing augmentation of training pairs (``train.mixing_augs``).

``mixup``: one ``lam ~ Beta(mixup_beta, mixup_beta)`` and one permutation ``p`` of the batch per
call; ``gt <- lam * gt + (1 - lam) * gt[p]`` and ``lq <- lam * lq + (1 - lam) * lq[p]``.
``use_identity``: the batch is left as it is with probability 1/2 (Restormer draws among
[mixup, identity]); otherwise every batch is mixed. Draws come from torch's global generator,
whose state the training state saves, so a resumed run draws the same.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Mixup", "build_mixing"]


class Mixup:
    """Mix each training pair with another pair of the same batch (Restormer's Mixing_Augment)."""

    def __init__(self, mixup_beta: float = 1.2, use_identity: bool = False) -> None:
        if not mixup_beta > 0:
            raise ValueError(f"train.mixing_augs.mixup_beta must be > 0, got {mixup_beta!r}.")
        beta = torch.tensor([float(mixup_beta)])
        self.dist = torch.distributions.Beta(beta, beta)
        self.use_identity = use_identity
        self.last_lam: float | None = None  # the lam of the latest mix (None: identity)

    def __call__(self, gt: torch.Tensor, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gt``, ``lq``: B x C x H x W (sizes may differ, e.g. super-resolution)."""
        self.last_lam = None
        if self.use_identity and int(torch.randint(0, 2, ())) == 1:
            return gt, lq
        lam = float(self.dist.sample())
        perm = torch.randperm(gt.shape[0]).to(gt.device)
        self.last_lam = lam
        return lam * gt + (1 - lam) * gt[perm], lam * lq + (1 - lam) * lq[perm]


def build_mixing(opt: dict[str, Any] | None) -> Mixup | None:
    """The augmentation of a ``train.mixing_augs`` block, or None when mixup is off."""
    if not opt or not opt.get("mixup"):
        return None
    return Mixup(opt.get("mixup_beta", 1.2), opt.get("use_identity", False))
