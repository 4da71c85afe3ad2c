"""SemanticLoss: L_sem alone (Eq. 12-14), the distance in h-space."""

from diffsr.losses.prior_loss_core import PriorLoss
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["SemanticLoss"]


@LOSS_REGISTRY.register()
class SemanticLoss(PriorLoss):
    """L_sem alone (Eq. 12-14), the distance in h-space.

    The UNet stops after its middle block, about a quarter of a full pass at 256x256.
    Options: :class:`diffsr.losses.prior_loss_core.PriorLoss`; guide: docs/diffloss.md.
    """

    uses_nat = False
    uses_sem = True
