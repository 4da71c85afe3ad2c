"""ResNet-50 classifier (He et al. 2016) with torchvision's state-dict layout.

Used by the CUB-200 classification experiments and the h-space analysis. The module names
(``conv1``, ``bn1``, ``layer1`` ... ``layer4`` of Bottleneck blocks with ``downsample.0/.1``,
``fc``) and the stride on the 3x3 convolution ("ResNet v1.5") follow torchvision, so its
ImageNet files ``resnet50-0676ba61.pth`` / ``resnet50-19c8e357.pth`` load directly.
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
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["RESNET50_WEIGHTS", "Bottleneck", "ResNet50"]

RESNET50_WEIGHTS = WeightFile(
    file_name="resnet50-0676ba61.pth",
    url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
    description="torchvision's ImageNet ResNet-50 (the older resnet50-19c8e357.pth also fits)",
)

EXPANSION = 4  # a Bottleneck outputs 4 x its width
FEATURE_DIM = 512 * EXPANSION


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus a (projected) shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def make_stage(in_channels: int, width: int, num_blocks: int, stride: int) -> nn.Sequential:
    """``num_blocks`` Bottlenecks; the first changes the channels (and resolution, by ``stride``)."""
    blocks = [Bottleneck(in_channels, width, stride)]
    blocks += [Bottleneck(width * EXPANSION, width) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


@ARCH_REGISTRY.register()
class ResNet50(nn.Module):
    """ResNet-50 image classifier.

    Input: B x 3 x H x W RGB in [0, 1] (ImageNet mean / std normalisation inside when
    ``normalize_input``). ``forward`` returns B x num_classes logits; ``forward_features``
    returns the B x 2048 globally average-pooled features before ``fc``.

    Args:
        num_classes: outputs of ``fc`` (1000 for ImageNet, 200 for CUB-200-2011).
        pretrained_path: a state dict in torchvision's layout: the ImageNet file
            ``resnet50-0676ba61.pth`` or a fine-tuned checkpoint (bare, or under ``params`` /
            ``state_dict``). ``None``: random initialisation (as torchvision's).
        skip_fc_mismatch: when the file's ``fc`` has another number of classes, load everything
            else and keep a freshly initialised ``fc`` (ImageNet -> CUB fine-tuning).
        normalize_input: apply ImageNet mean / std to the [0, 1] input first.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        pretrained_path: str | None = None,
        skip_fc_mismatch: bool = False,
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        check_num_classes("ResNet50", num_classes)
        self.normalize_input = normalize_input
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = make_stage(64, width=64, num_blocks=3, stride=1)
        self.layer2 = make_stage(256, width=128, num_blocks=4, stride=2)
        self.layer3 = make_stage(512, width=256, num_blocks=6, stride=2)
        self.layer4 = make_stage(1024, width=512, num_blocks=3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)
        self.reset_parameters()
        if pretrained_path is not None:
            load_classifier_backbone(
                self, pretrained_path, RESNET50_WEIGHTS, "fc", "fc", skip_fc_mismatch
            )
        register_imagenet_stats(self)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He-normal (fan-out) convolutions, unit BatchNorm."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> B x 2048 pooled features (input to ``fc``)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet50 expects B x 3 x H x W RGB in [0, 1], got {tuple(x.shape)}.")
        if self.normalize_input:
            x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> B x num_classes logits."""
        return self.fc(self.forward_features(x))
