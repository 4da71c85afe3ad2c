"""Adversarial loss for the generator and the discriminator (vanilla, LSGAN, WGAN, hinge)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["GANLoss"]

GAN_TYPES = ("vanilla", "lsgan", "wgan", "hinge")


@LOSS_REGISTRY.register()
class GANLoss(nn.Module):
    """Adversarial loss on discriminator outputs (raw logits / scores of any shape).

    Called as ``loss(d_output, target_is_real, is_disc=False)``, not as ``loss(pred, target)``;
    the class attribute ``gan_loss = True`` tells the training model so.

    - ``vanilla``: binary cross-entropy with logits against ``real_label_val`` / ``fake_label_val``.
    - ``lsgan``: mean squared error against the same labels.
    - ``wgan``: ``-mean(x)`` for real, ``mean(x)`` for fake.
    - ``hinge``: discriminator ``mean(relu(1 - x))`` real, ``mean(relu(1 + x))`` fake; generator
      ``-mean(x)`` whatever ``target_is_real`` says.

    ``loss_weight`` (the paper uses 0.005) scales the generator loss only
    (``is_disc=False``); the discriminator's own loss is returned unweighted, as in BasicSR.
    """

    gan_loss = True

    def __init__(
        self,
        gan_type: str = "vanilla",
        real_label_val: float = 1.0,
        fake_label_val: float = 0.0,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if gan_type not in GAN_TYPES:
            raise ValueError(
                f"GANLoss: gan_type must be one of {', '.join(GAN_TYPES)}; got {gan_type!r}."
            )
        self.gan_type = gan_type
        self.real_label_val = real_label_val
        self.fake_label_val = fake_label_val
        self.loss_weight = loss_weight

    def forward(
        self, input: torch.Tensor, target_is_real: bool, is_disc: bool = False
    ) -> torch.Tensor:
        """``input``: discriminator output (any shape); returns a scalar."""
        if self.gan_type == "hinge":
            if is_disc:
                margin = 1.0 - input if target_is_real else 1.0 + input
                loss = F.relu(margin).mean()
            else:
                loss = -input.mean()
        elif self.gan_type == "wgan":
            loss = -input.mean() if target_is_real else input.mean()
        else:
            label = self.real_label_val if target_is_real else self.fake_label_val
            target = torch.full_like(input, label)
            if self.gan_type == "vanilla":
                loss = F.binary_cross_entropy_with_logits(input, target)
            else:
                loss = F.mse_loss(input, target)
        return loss if is_disc else self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"gan_type={self.gan_type!r}, loss_weight={self.loss_weight}"
