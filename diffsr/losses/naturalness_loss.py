"""NaturalnessLoss: L_nat alone (Eq. 11), the distance of the prior's noise predictions."""

from diffsr.losses.prior_loss_core import PriorLoss
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["NaturalnessLoss"]


@LOSS_REGISTRY.register()
class NaturalnessLoss(PriorLoss):
    """L_nat alone (Eq. 11), the distance of the prior's noise predictions.

    With ``space: x0`` or ``xprev`` it compares predicted clean images or posterior means instead
    (the ablation of Table 4).
    Options: :class:`diffsr.losses.prior_loss_core.PriorLoss`; guide: docs/diffloss.md.
    """

    uses_nat = True
    uses_sem = False
