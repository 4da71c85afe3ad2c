"""Perceptual loss: distance between VGG16 features of the restored and the ground-truth image."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.archs.vgg_arch import DEFAULT_VGG16_PATH, VGG16FeatureExtractor
from diffsr.losses.loss_util import check_same_shape
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["PerceptualLoss"]

CRITERIA = {"l1": F.l1_loss, "l2": F.mse_loss, "mse": F.mse_loss}


@LOSS_REGISTRY.register()
class PerceptualLoss(nn.Module):
    """``loss_weight * sum_l w_l * criterion(VGG_l(pred), VGG_l(target))`` on [0, 1] RGB images.

    Args:
        layer_weights: VGG16 layer name -> weight; default relu1_2, relu2_2, relu3_3 with weight
            1 each (the paper's "layers 1-3"; it uses ``loss_weight: 0.001``).
        vgg_path: torchvision's ``vgg16-397923af.pth``; ``None`` only with ``allow_random_init``.
        allow_random_init: accept random VGG weights (tests only).
        criterion: ``'l1'`` (mean absolute error) or ``'l2'`` / ``'mse'`` (mean squared error).
        loss_weight: multiplier of the whole loss.
        normalize_input: ImageNet mean / std normalisation inside the VGG.
    """

    def __init__(
        self,
        layer_weights: dict[str, float] | None = None,
        vgg_path: str | None = DEFAULT_VGG16_PATH,
        allow_random_init: bool = False,
        criterion: str = "l1",
        loss_weight: float = 1.0,
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        if layer_weights is None:
            layer_weights = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0}
        if not isinstance(layer_weights, dict) or not layer_weights:
            raise ValueError(
                f"PerceptualLoss: layer_weights must be a non-empty mapping of VGG16 layer names "
                f"to weights, e.g. {{relu1_2: 1, relu2_2: 1, relu3_3: 1}}; got {layer_weights!r}."
            )
        if criterion not in CRITERIA:
            raise ValueError(
                f"PerceptualLoss: criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}."
            )
        self.layer_weights = {name: float(weight) for name, weight in layer_weights.items()}
        self.criterion_name = criterion
        self.criterion = CRITERIA[criterion]
        self.loss_weight = loss_weight
        self.vgg = VGG16FeatureExtractor(
            layer_names=list(self.layer_weights),
            pretrained_path=vgg_path,
            allow_random_init=allow_random_init,
            normalize_input=normalize_input,
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: B x 3 x H x W in [0, 1]; returns a scalar (gradient to pred)."""
        check_same_shape(pred, target, type(self).__name__)
        pred_features = self.vgg(pred)
        with torch.no_grad():  # the target branch needs no graph
            target_features = self.vgg(target.detach())
        loss = sum(
            weight * self.criterion(pred_features[name], target_features[name])
            for name, weight in self.layer_weights.items()
        )
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, criterion={self.criterion_name!r}, "
            f"loss_weight={self.loss_weight}"
        )
