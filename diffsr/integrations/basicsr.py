"""diffsr inside BasicSR: ``import diffsr.integrations.basicsr`` before BasicSR builds anything.

Registers, in BasicSR's own registries:

* losses ``DiffLoss``, ``NaturalnessLoss`` and ``SemanticLoss`` (diffsr's classes, unchanged);
* the model ``DiffLossSRModel``: BasicSR's ``SRModel`` plus an optional ``train.diffloss_opt``
  block next to ``pixel_opt`` / ``perceptual_opt``. BasicSR's ``SRModel`` builds only those two
  blocks, so a ``diffloss_opt`` under plain ``SRModel`` would be ignored; set
  ``model_type: DiffLossSRModel`` instead.

Train with BasicSR's own pipeline: ``python -m diffsr.integrations.basicsr_train -opt X.yml``
(BasicSR's command-line flags apply). Needs the ``basicsr`` package (e.g. ``basicsr-volta``);
diffsr's own trainer does not.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

try:
    from basicsr.losses import build_loss
    from basicsr.models.sr_model import SRModel
    from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "diffsr.integrations.basicsr needs BasicSR: pip install basicsr-volta (or basicsr-fixed); "
        f"importing it failed with: {err}"
    ) from err

from diffsr.losses.diffloss_loss import DiffLoss
from diffsr.losses.naturalness_loss import NaturalnessLoss
from diffsr.losses.semantic_loss import SemanticLoss

__all__ = ["DiffLossSRModel"]

for _loss in (DiffLoss, NaturalnessLoss, SemanticLoss):
    if _loss.__name__ not in LOSS_REGISTRY:
        LOSS_REGISTRY.register(_loss)


class DiffLossSRModel(SRModel):
    """BasicSR's SRModel with ``train.diffloss_opt`` (any of the three prior losses).

    The prior is built once, on the model's device, frozen and outside ``net_g``: it is never
    optimised, averaged into the EMA or saved. Logged: ``l_pix``, ``l_percep``/``l_style``,
    ``l_diffloss`` and its unweighted parts ``l_diffloss_nat`` / ``l_diffloss_sem``.
    """

    def init_training_settings(self) -> None:
        super().init_training_settings()
        block = self.opt["train"].get("diffloss_opt")
        self.cri_diffloss = None
        if block:
            block = {"device": str(self.device), **block}
            self.cri_diffloss = build_loss(block).to(self.device)

    def generator_losses(self) -> tuple[OrderedDict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The weighted loss terms of ``self.output`` against ``self.gt``, and extra values to log."""
        terms: OrderedDict[str, torch.Tensor] = OrderedDict()
        if self.cri_pix:
            terms["l_pix"] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            percep, style = self.cri_perceptual(self.output, self.gt)
            if percep is not None:
                terms["l_percep"] = percep
            if style is not None:
                terms["l_style"] = style
        logged: dict[str, torch.Tensor] = {}
        if self.cri_diffloss is not None:
            terms["l_diffloss"] = self.cri_diffloss(self.output, self.gt)
            for name, value in self.cri_diffloss.logged_terms.items():
                logged[f"l_diffloss_{name}"] = torch.tensor(value, device=self.device)
        return terms, logged

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)
        terms, logged = self.generator_losses()
        total = sum(terms.values())
        total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(OrderedDict(**terms, **logged))
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


if "DiffLossSRModel" not in MODEL_REGISTRY:
    MODEL_REGISTRY.register(DiffLossSRModel)
