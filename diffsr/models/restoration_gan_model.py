"""RestorationGANModel: RestorationModel plus a discriminator and alternating G/D updates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from diffsr.archs import build_network
from diffsr.losses import LOSS_REGISTRY
from diffsr.models.checkpoint import load_network
from diffsr.models.restoration_model import RestorationModel
from diffsr.utils.registry import MODEL_REGISTRY

__all__ = ["RestorationGANModel"]

logger = logging.getLogger("diffsr")


def _is_gan_block(key: str, block: Any) -> bool:
    if not key.endswith("_opt") or not isinstance(block, dict) or "type" not in block:
        return False
    return getattr(LOSS_REGISTRY.get(block["type"]), "gan_loss", False)


def _set_requires_grad(net: nn.Module, flag: bool) -> None:
    for param in net.parameters():
        param.requires_grad_(flag)


@MODEL_REGISTRY.register()
class RestorationGANModel(RestorationModel):
    """Adds ``network_d`` and a ``train.gan_opt`` block (a loss with ``gan_loss = True``).

    Each iteration updates G with its losses plus the adversarial term (after
    ``net_d_init_iters`` and every ``net_d_iters``), then D on real ``gt`` and detached output.
    """

    def init_training_settings(self) -> None:
        super().init_training_settings()
        train = self.opt["train"]
        if not self.opt.get("network_d"):
            raise ValueError("model_type RestorationGANModel needs a network_d block.")
        gan_blocks = [(key, block) for key, block in train.items() if _is_gan_block(key, block)]
        if len(gan_blocks) != 1:
            raise ValueError(
                "model_type RestorationGANModel needs exactly one adversarial loss block, e.g. "
                "train.gan_opt: {type: GANLoss, gan_type: vanilla, loss_weight: 0.005}."
            )
        self.gan_name, gan_block = gan_blocks[0]
        self.gan_loss = LOSS_REGISTRY.build(gan_block).to(self.device)
        net_d = build_network(self.opt["network_d"])
        self.load_pretrained(net_d, "d")
        self.net_d = self.model_to_device(net_d).train()
        self.optimizer_d = self.build_optimizer(
            list(self.net_d.parameters()), train.get("optim_d") or train["optim_g"]
        )
        logger.info(
            "Discriminator %s: %s parameters.",
            self.opt["network_d"]["type"],
            f"{self.count_parameters(net_d):,}",
        )

    def optimize_parameters(self, current_iter: int) -> dict[str, float]:
        train = self.opt["train"]
        log: dict[str, float] = {}
        outputs = self.forward_train()
        final = outputs[-1]
        update_g = (
            current_iter > train["net_d_init_iters"] and current_iter % train["net_d_iters"] == 0
        )
        if update_g:
            _set_requires_grad(self.net_d, False)
            self.optimizer_g.zero_grad(set_to_none=True)
            total, log = self.compute_losses(
                outputs, grad_share=self.wants_grad_share(current_iter)
            )
            adversarial = self.generator_adversarial(final)
            total = total + adversarial
            log[f"l_{self.gan_name.removesuffix('_opt')}"] = adversarial.item()
            log["l_total"] = total.item()
            if not self.loss_is_finite(total):
                return self.handle_non_finite(current_iter, log)
            self.step_generator(total)

        _set_requires_grad(self.net_d, True)
        self.optimizer_d.zero_grad(set_to_none=True)
        real, fake = self.discriminator_losses(final)
        d_total = real + fake
        if not torch.isfinite(d_total):
            return self.handle_non_finite(
                current_iter, {**log, "l_d_real": real.item(), "l_d_fake": fake.item()}
            )
        self.scaler.scale(d_total).backward()
        self.scaler.step(self.optimizer_d)
        self.scaler.update()
        log.update(l_d_real=real.item(), l_d_fake=fake.item())
        return log

    def generator_adversarial(self, final: torch.Tensor) -> torch.Tensor:
        """G's adversarial term (``net_d`` frozen): D should call the output real."""
        return self.gan_loss(self.net_d(final), True, is_disc=False)

    def discriminator_losses(self, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's losses on the real ``gt`` and on the detached output ``final``."""
        real = self.gan_loss(self.net_d(self.gt), True, is_disc=True)
        fake = self.gan_loss(self.net_d(final.detach()), False, is_disc=True)
        return real, fake

    def network_params(self) -> dict[str, dict[str, nn.Module]]:
        params = super().network_params()
        params["d"] = {"params": self.net_d}
        return params

    def load_networks_for_resume(self, current_iter: int) -> None:
        super().load_networks_for_resume(current_iter)
        path = Path(self.opt["path"]["models"]) / f"net_d_{current_iter}.pth"
        load_network(self.net_d, path, strict=True, param_key="params")


@MODEL_REGISTRY.register()
class RelativisticGANModel(RestorationGANModel):
    """ESRGAN's relativistic average GAN (BasicSR's ``ESRGANModel``), with ``C = net_d``::

        G: (gan(C(gt) - mean C(out), fake) + gan(C(out) - mean C(gt), real)) / 2, C(gt) detached
        D: gan(C(gt) - mean C(out), real) / 2 + gan(C(out) - mean C(gt), fake) / 2

    where the D terms see the detached output and the other branch's mean is detached.
    """

    def generator_adversarial(self, final: torch.Tensor) -> torch.Tensor:
        real = self.net_d(self.gt).detach()
        fake = self.net_d(final)
        return (
            self.gan_loss(real - fake.mean(), False, is_disc=False)
            + self.gan_loss(fake - real.mean(), True, is_disc=False)
        ) / 2

    def discriminator_losses(self, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = final.detach()
        fake_mean = self.net_d(output).detach().mean()
        real = self.net_d(self.gt)
        l_real = self.gan_loss(real - fake_mean, True, is_disc=True) * 0.5
        fake = self.net_d(output)
        l_fake = self.gan_loss(fake - real.detach().mean(), False, is_disc=True) * 0.5
        return l_real, l_fake
