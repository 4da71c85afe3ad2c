"""AlexNet feature extractor (the LPIPS default backbone), loading torchvision's weight file.

The convolutional part is laid out exactly as torchvision's ``alexnet().features`` (an
``nn.Sequential`` of 13 layers with convolutions at indices 0, 3, 6, 8, 10), so
``features.N.weight`` / ``features.N.bias`` of ``alexnet-owt-7be5be79.pth`` load directly;
the file's ``classifier.*`` keys are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from diffsr.archs.backbone_util import (
    WeightFile,
    check_layer_names,
    load_backbone_state,
    register_imagenet_stats,
)
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["ALEXNET_LAYER_NAMES", "ALEXNET_WEIGHTS", "AlexNetFeatureExtractor"]

ALEXNET_WEIGHTS = WeightFile(
    file_name="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    description="torchvision's ImageNet AlexNet",
)

ALEXNET_LAYER_NAMES = (
    "conv1", "relu1", "pool1",
    "conv2", "relu2", "pool2",
    "conv3", "relu3",
    "conv4", "relu4",
    "conv5", "relu5", "pool5",
)  # fmt: skip


def build_alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` (one-weird-trick variant: 64-192-384-256-256)."""

    def conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int):
        return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)

    # ReLUs are not in-place so that a requested conv output is not overwritten.
    return nn.Sequential(
        conv(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        conv(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        conv(192, 384, 3, 1, 1), nn.ReLU(),
        conv(384, 256, 3, 1, 1), nn.ReLU(),
        conv(256, 256, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
    )  # fmt: skip


@ARCH_REGISTRY.register()
class AlexNetFeatureExtractor(nn.Module):
    """Frozen ImageNet AlexNet returning the activations of named layers.

    Input: B x 3 x H x W RGB in [0, 1] (normalised with ImageNet mean / std inside when
    ``normalize_input``; LPIPS turns this off and applies its own scaling). H, W >= 31 so that
    every layer up to ``relu5`` has at least one pixel. Output: ``{name: B x C_l x H_l x W_l}``
    for each of ``layer_names``; only the layers up to the deepest requested one are run.

    Args:
        layer_names: layers to return, from ALEXNET_LAYER_NAMES (conv1 ... relu5, pool5).
        pretrained_path: torchvision's ``alexnet-owt-7be5be79.pth``. ``None`` keeps a random
            initialisation and is only accepted together with ``allow_random_init`` (for tests).
        allow_random_init: permit ``pretrained_path=None``.
        normalize_input: subtract the ImageNet mean and divide by the std first.
    """

    def __init__(
        self,
        layer_names: Sequence[str] = ("relu1", "relu2", "relu3", "relu4", "relu5"),
        pretrained_path: str | None = ALEXNET_WEIGHTS.default_path,
        allow_random_init: bool = False,
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        self.layer_names = check_layer_names(layer_names, ALEXNET_LAYER_NAMES, "AlexNet")
        self.depth = 1 + max(ALEXNET_LAYER_NAMES.index(name) for name in self.layer_names)
        self.normalize_input = normalize_input
        self.features = build_alexnet_features()
        if pretrained_path is not None:
            load_backbone_state(
                self, pretrained_path, ALEXNET_WEIGHTS, ignore_prefixes=("classifier.",)
            )
        elif not allow_random_init:
            raise ValueError(
                f"AlexNetFeatureExtractor: pretrained_path is null. Give the path of "
                f"{ALEXNET_WEIGHTS.file_name} ({ALEXNET_WEIGHTS.url}), normally "
                f"{ALEXNET_WEIGHTS.default_path} (allow_random_init: true permits random weights, "
                f"for tests only)."
            )
        register_imagenet_stats(self)  # not persistent: the keys stay torchvision's features.*
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> AlexNetFeatureExtractor:
        """Always stays in eval mode: the extractor is a fixed, pretrained measuring device."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"AlexNetFeatureExtractor expects B x 3 x H x W RGB in [0, 1], got "
                f"{tuple(x.shape)}."
            )
        if self.normalize_input:
            x = (x - self.mean) / self.std
        wanted = set(self.layer_names)
        outputs = {}
        for name, layer in zip(ALEXNET_LAYER_NAMES[: self.depth], self.features):
            x = layer(x)
            if name in wanted:
                outputs[name] = x
        return outputs
