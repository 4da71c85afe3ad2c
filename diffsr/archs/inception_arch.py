"""Inception-v3 (Szegedy et al. 2016) pool3 feature extractor for FID.

Module names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ...), which is also the layout of the FID weights that
pytorch-fid ported from TensorFlow. Two variants:

- ``'fid'`` (default, the reference for FID): ``pt_inception-2015-12-05-6726825d.pth``. Its
  TensorFlow graph averages pooling windows over valid pixels only (``count_include_pad=False``)
  in the Mixed_5*, Mixed_6b-e and Mixed_7b blocks, and max-pools (not average-pools) the pooling
  branch of Mixed_7c.
- ``'torchvision'``: ``inception_v3_google-0cc3c7bd.pth``, torchvision's ImageNet classifier
  (zero padding counted in every average pool). Its FIDs are not comparable with published ones.

Only the trunk up to the final average pool is built; a file's ``fc.*`` and ``AuxLogits.*`` keys
are ignored.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.archs.backbone_util import WeightFile, load_checked_state, read_state_dict
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["INCEPTION_WEIGHTS", "InceptionV3FeatureExtractor"]

INCEPTION_WEIGHTS = {
    "fid": WeightFile(
        file_name="pt_inception-2015-12-05-6726825d.pth",
        url=(
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth"
        ),
        description="pytorch-fid's port of TensorFlow's FID Inception (2015-12-05)",
    ),
    "torchvision": WeightFile(
        file_name="inception_v3_google-0cc3c7bd.pth",
        url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        description="torchvision's ImageNet Inception-v3",
    ),
}
# Rows of the file's ``fc.weight``: the TF graph has 1008 classes, torchvision 1000.
FC_CLASSES = {"fid": 1008, "torchvision": 1000}
FEATURE_DIM = 2048
MIN_INPUT_SIZE = 75

Variant = Literal["fid", "torchvision"]
PoolKind = Literal["avg", "avg_valid", "max"]


class BasicConv2d(nn.Module):
    """Convolution without bias -> BatchNorm (eps 1e-3, as TensorFlow) -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool_3x3(x: torch.Tensor, kind: PoolKind) -> torch.Tensor:
    """The stride-1, size-preserving 3x3 pool of a pooling branch."""
    if kind == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=kind == "avg")


class InceptionA(nn.Module):
    """35 x 35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int, pool: PoolKind) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(pool_3x3(x, self.pool))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], dim=1)


class InceptionB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + in_channels channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], dim=1)


class InceptionC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions (1x7, 7x1) -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int, pool: PoolKind) -> None:
        super().__init__()
        c7 = channels_7x7
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for conv in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = conv(branch7x7dbl)
        branch_pool = self.branch_pool(pool_3x3(x, self.pool))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], dim=1)


class InceptionD(nn.Module):
    """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + in_channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(branch7x7x3)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], dim=1)


class InceptionE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 outputs -> 2048 channels."""

    def __init__(self, in_channels: int, pool: PoolKind) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1
        )
        branch_pool = self.branch_pool(pool_3x3(x, self.pool))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], dim=1)


@ARCH_REGISTRY.register()
class InceptionV3FeatureExtractor(nn.Module):
    """Frozen Inception-v3 returning the 2048-d pool3 features used by FID.

    Input: B x 3 x H x W RGB in [0, 1]. It is resized to ``resize_to`` x ``resize_to`` (bilinear,
    ``align_corners=False``) and scaled to [-1, 1], as pytorch-fid does. Output: B x 2048.

    Args:
        pretrained_path: the variant's weight file (see INCEPTION_WEIGHTS). ``None`` keeps a
            random initialisation and is only accepted together with ``allow_random_init``.
        variant: ``'fid'`` (pytorch-fid's TF port; the FID reference) or ``'torchvision'``.
        resize_to: input side length; 299 for real FIDs, smaller (>= 75) only for fast tests.
        allow_random_init: permit ``pretrained_path=None`` (for tests).
    """

    def __init__(
        self,
        pretrained_path: str | None = INCEPTION_WEIGHTS["fid"].default_path,
        variant: Variant = "fid",
        resize_to: int = 299,
        allow_random_init: bool = False,
    ) -> None:
        super().__init__()
        if variant not in INCEPTION_WEIGHTS:
            raise ValueError(
                f"InceptionV3FeatureExtractor: variant must be one of "
                f"{', '.join(INCEPTION_WEIGHTS)}, got {variant!r}."
            )
        if (
            isinstance(resize_to, bool)
            or not isinstance(resize_to, int)
            or resize_to < MIN_INPUT_SIZE
        ):
            raise ValueError(
                f"InceptionV3FeatureExtractor: resize_to must be an int >= {MIN_INPUT_SIZE} (299 "
                f"for comparable FIDs), got {resize_to!r}."
            )
        self.variant = variant
        self.resize_to = resize_to
        # TensorFlow's graph excludes padding from average pools and max-pools in Mixed_7c.
        pool_a_c: PoolKind = "avg_valid" if variant == "fid" else "avg"
        pool_last: PoolKind = "max" if variant == "fid" else "avg"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32, pool=pool_a_c)
        self.Mixed_5c = InceptionA(256, pool_features=64, pool=pool_a_c)
        self.Mixed_5d = InceptionA(288, pool_features=64, pool=pool_a_c)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, pool=pool_a_c)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, pool=pool_a_c)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, pool=pool_a_c)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, pool=pool_a_c)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=pool_a_c)
        self.Mixed_7c = InceptionE(2048, pool=pool_last)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.reset_parameters()
        if pretrained_path is not None:
            self.load_weights(pretrained_path)
        elif not allow_random_init:
            weights = INCEPTION_WEIGHTS[variant]
            raise ValueError(
                f"InceptionV3FeatureExtractor: pretrained_path is null. Give the path of "
                f"{weights.file_name} ({weights.url}), normally {weights.default_path} "
                f"(allow_random_init: true permits random weights, for tests only)."
            )
        self.requires_grad_(False)
        self.eval()

    def reset_parameters(self) -> None:
        """He-normal (fan-in) convolutions, so randomly initialised features keep an O(1) scale."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def load_weights(self, path: str) -> None:
        """Load the trunk from ``path``, checking that the file belongs to ``self.variant``."""
        weights = INCEPTION_WEIGHTS[self.variant]
        state = read_state_dict(path, weights)
        fc_weight = state.get("fc.weight")
        has_aux = any(key.startswith("AuxLogits.") for key in state)
        file_variant = None
        if fc_weight is not None and fc_weight.shape[0] == FC_CLASSES["fid"] and not has_aux:
            file_variant = "fid"
        elif fc_weight is not None and fc_weight.shape[0] == FC_CLASSES["torchvision"]:
            file_variant = "torchvision"
        if file_variant is not None and file_variant != self.variant:
            raise ValueError(
                f"{path} holds the {file_variant!r} Inception weights "
                f"({INCEPTION_WEIGHTS[file_variant].file_name}) but variant is {self.variant!r}; "
                f"set variant: {file_variant} (the two differ in their pooling layers)."
            )
        load_checked_state(self, state, path, weights, ignore_prefixes=("fc.", "AuxLogits."))

    def train(self, mode: bool = True) -> InceptionV3FeatureExtractor:
        """Always stays in eval mode (BatchNorm uses the stored statistics)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> B x 2048 pool3 features."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"InceptionV3FeatureExtractor expects B x 3 x H x W RGB in [0, 1], got "
                f"{tuple(x.shape)}."
            )
        size = (self.resize_to, self.resize_to)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x))))
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,
            self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        return torch.flatten(self.avgpool(x), 1)
