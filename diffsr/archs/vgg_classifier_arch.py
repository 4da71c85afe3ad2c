"""VGG16 image classifier (Simonyan & Zisserman 2015) with torchvision's state-dict layout.

Used by the CUB-200 classification experiments. ``features`` is the VGG16 convolutional stack of
``vgg_arch`` (torchvision indices), followed by a 7 x 7 adaptive average pool and
``classifier.0 / .3 / .6`` (4096 -> 4096 -> num_classes), so torchvision's
``vgg16-397923af.pth`` loads directly.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from diffsr.archs.backbone_util import (
    WeightFile,
    check_num_classes,
    load_classifier_backbone,
    register_imagenet_stats,
)
from diffsr.archs.vgg_arch import (
    VGG16_FILE_NAME,
    VGG16_LAYER_NAMES,
    VGG16_URL,
    build_vgg16_features,
)
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["VGG16_WEIGHTS", "VGG16Classifier"]

VGG16_WEIGHTS = WeightFile(
    file_name=VGG16_FILE_NAME, url=VGG16_URL, description="torchvision's ImageNet VGG16"
)
HIDDEN_DIM = 4096
POOLED_SIZE = 7


@ARCH_REGISTRY.register()
class VGG16Classifier(nn.Module):
    """VGG16 image classifier.

    Input: B x 3 x H x W RGB in [0, 1] (ImageNet mean / std normalisation inside when
    ``normalize_input``), H, W >= 32. ``forward`` returns B x num_classes logits;
    ``forward_features`` returns the B x 4096 penultimate features (input to ``classifier.6``).

    Args:
        num_classes: outputs of the last layer (1000 for ImageNet, 200 for CUB-200-2011).
        pretrained_path: a state dict in torchvision's layout: ``vgg16-397923af.pth`` or a
            fine-tuned checkpoint (bare, or under ``params`` / ``state_dict``). ``None``: random
            initialisation (as torchvision's).
        skip_fc_mismatch: when the file's last layer (``classifier.6``) has another number of
            classes, load everything else and keep a freshly initialised last layer.
        normalize_input: apply ImageNet mean / std to the [0, 1] input first.
        dropout: dropout probability of the two hidden layers.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        pretrained_path: str | None = None,
        skip_fc_mismatch: bool = False,
        normalize_input: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_num_classes("VGG16Classifier", num_classes)
        self.normalize_input = normalize_input
        self.features = build_vgg16_features(len(VGG16_LAYER_NAMES))
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.classifier = nn.Sequential(
            nn.Linear(512 * POOLED_SIZE * POOLED_SIZE, HIDDEN_DIM),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN_DIM, HIDDEN_DIM),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN_DIM, num_classes),
        )
        self.reset_parameters()
        if pretrained_path is not None:
            load_classifier_backbone(
                self, pretrained_path, VGG16_WEIGHTS, "classifier.6", "last layer", skip_fc_mismatch
            )
        register_imagenet_stats(self)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He-normal (fan-out) convolutions, N(0, 0.01) linears."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> B x 4096 penultimate features."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"VGG16Classifier expects B x 3 x H x W RGB in [0, 1], got {tuple(x.shape)}."
            )
        if self.normalize_input:
            x = (x - self.mean) / self.std
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> B x num_classes logits."""
        return self.classifier[-1](self.forward_features(x))
