"""DiffLoss: L_DiffLoss = L_nat + lambda_sem * L_sem (Eq. 15), the paper's loss."""

from diffsr.losses.prior_loss_core import PriorLoss
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["DiffLoss"]


@LOSS_REGISTRY.register()
class DiffLoss(PriorLoss):
    """L_DiffLoss = L_nat + lambda_sem * L_sem (Eq. 15), the paper's loss.

    Example: ``diffloss_opt: {type: DiffLoss, loss_weight: 0.001, lambda_sem: 0.01, prior: {preset:
    adm_256_uncond, checkpoint: experiments/pretrained_models/256x256_diffusion_uncond.pt}}``.
    Options: :class:`diffsr.losses.prior_loss_core.PriorLoss`; guide: docs/diffloss.md.
    """

    uses_nat = True
    uses_sem = True
