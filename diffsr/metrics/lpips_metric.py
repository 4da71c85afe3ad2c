"""LPIPS, the learned perceptual image patch similarity of Zhang et al. (CVPR 2018), v0.1.

Both images are scaled to [-1, 1], shifted and scaled per channel by the LPIPS "ScalingLayer"
constants, and passed through a frozen ImageNet backbone (AlexNet by default, or VGG16). At each
of five layers the features are unit-normalised along channels, their squared difference is
weighted per channel by a learned non-negative 1x1 "linear head", and averaged over space; the
distance is the sum over layers. 0 means identical; lower is better.

Needed files (never downloaded):

- the backbone: torchvision's ``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``;
- the linear heads: ``alex.pth`` / ``vgg.pth`` of the LPIPS package (weights/v0.1). By default
  they are taken from the installed ``lpips`` wheel (BSD-2-Clause, 54 KB; install it with
  ``pip install --no-deps lpips``: it is only read, never imported, so torchvision is not
  needed), else from ``experiments/pretrained_models/lpips_v0.1/``.

A missing file raises :class:`MissingWeightsError` naming every missing file.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from diffsr.archs.alexnet_arch import ALEXNET_WEIGHTS, AlexNetFeatureExtractor
from diffsr.archs.backbone_util import (
    WeightFile,
    default_device,
    load_checked_state,
    read_state_dict,
    require_weight_files,
)
from diffsr.archs.vgg_arch import VGG16FeatureExtractor
from diffsr.archs.vgg_classifier_arch import VGG16_WEIGHTS
from diffsr.metrics.metric_util import prepare_pair
from diffsr.utils.registry import METRIC_REGISTRY

__all__ = [
    "LPIPS",
    "LPIPS_HEAD_WEIGHTS",
    "calculate_lpips",
    "default_head_path",
    "get_lpips_network",
    "lpips_pt",
    "wheel_head_path",
]

LPIPS_WEIGHTS_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1"
)
LPIPS_HEAD_WEIGHTS = {
    net: WeightFile(
        file_name=f"{net}.pth",
        url=(
            f"{LPIPS_WEIGHTS_URL}/{net}.pth (or run 'pip install --no-deps lpips': diffsr "
            f"then finds lpips/weights/v0.1/{net}.pth in it)"
        ),
        description=f"LPIPS v0.1 linear heads for {name}",
        subdir="lpips_v0.1",
    )
    for net, name in (("alex", "AlexNet"), ("vgg", "VGG16"))
}
BACKBONE_WEIGHTS = {"alex": ALEXNET_WEIGHTS, "vgg": VGG16_WEIGHTS}
LAYERS = {
    "alex": ("relu1", "relu2", "relu3", "relu4", "relu5"),
    "vgg": ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"),
}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
# Smallest H, W giving every used layer at least one pixel.
MIN_SIZE = {"alex": 31, "vgg": 16}
# LPIPS v0.1 ScalingLayer: maps [-1, 1] inputs to roughly ImageNet-normalised ones.
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


def check_net(net: str) -> None:
    if net not in LAYERS:
        raise ValueError(f"LPIPS: net must be 'alex' or 'vgg', got {net!r}.")


def wheel_head_path(net: str) -> Path | None:
    """``lpips/weights/v0.1/<net>.pth`` of the installed ``lpips`` package, or None.

    The package is located with ``importlib.util.find_spec``, which does not import it (its
    import needs torchvision).
    """
    spec = importlib.util.find_spec("lpips")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "weights" / "v0.1" / f"{net}.pth"
        if path.is_file():
            return path
    return None


def default_head_path(net: str) -> str:
    """The linear-head file used when ``lin_path`` is not given: the ``lpips`` wheel's, else
    ``experiments/pretrained_models/lpips_v0.1/<net>.pth``."""
    check_net(net)
    in_wheel = wheel_head_path(net)
    return str(in_wheel) if in_wheel is not None else LPIPS_HEAD_WEIGHTS[net].default_path


def unit_normalize(features: torch.Tensor) -> torch.Tensor:
    """Divide B x C x H x W features by their L2 norm over channels (+ eps, as LPIPS does)."""
    norm = torch.sqrt(torch.sum(features**2, dim=1, keepdim=True))
    return features / (norm + NORM_EPS)


class LPIPS(nn.Module):
    """Frozen LPIPS distance between two batches of B x 3 x H x W RGB images in [0, 1].

    ``forward(x, y)`` returns a tensor of shape B (float32, differentiable w.r.t. the inputs).

    Args:
        net: ``'alex'`` (the reference default) or ``'vgg'``.
        weights_path: the torchvision backbone file; ``None``: its default path.
        lin_path: the LPIPS v0.1 linear-head file ``alex.pth`` / ``vgg.pth``; ``None``: the
            installed ``lpips`` wheel's, else ``experiments/pretrained_models/lpips_v0.1/``
            (:func:`default_head_path`).
    """

    def __init__(
        self, net: str = "alex", weights_path: str | None = None, lin_path: str | None = None
    ) -> None:
        super().__init__()
        check_net(net)
        self.net = net
        weights_path = weights_path or BACKBONE_WEIGHTS[net].default_path
        lin_path = lin_path or default_head_path(net)
        require_weight_files(
            [(weights_path, BACKBONE_WEIGHTS[net]), (lin_path, LPIPS_HEAD_WEIGHTS[net])]
        )
        extractor = AlexNetFeatureExtractor if net == "alex" else VGG16FeatureExtractor
        self.backbone = extractor(
            layer_names=LAYERS[net], pretrained_path=weights_path, normalize_input=False
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        self.load_heads(lin_path)
        self.register_buffer(
            "shift", torch.tensor(SCALING_SHIFT).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor(SCALING_SCALE).view(1, 3, 1, 1), persistent=False
        )
        self.requires_grad_(False)
        self.eval()

    def load_heads(self, path: str) -> None:
        """Load ``lin<k>.model.1.weight`` (1 x C_k x 1 x 1, non-negative) into ``heads.<k>``."""
        weights = LPIPS_HEAD_WEIGHTS[self.net]
        state = read_state_dict(path, weights)
        renamed = {
            f"{index}.weight": state[f"lin{index}.model.1.weight"]
            for index in range(len(self.heads))
            if f"lin{index}.model.1.weight" in state
        }
        # Other keys (e.g. the lin5/lin6 of a SqueezeNet file) fail as missing/mismatched here.
        load_checked_state(self.heads, renamed, path, weights)
        for index, head in enumerate(self.heads):
            if (head.weight < 0).any():
                raise ValueError(
                    f"{path}: lin{index}.model.1.weight has negative values, but LPIPS linear "
                    f"heads are non-negative; expected {weights.file_name} from {weights.url}."
                )

    def train(self, mode: bool = True) -> LPIPS:
        """Always stays in eval mode: a fixed measuring device."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (shape B) between B x 3 x H x W RGB tensors in [0, 1]."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two B x 3 x H x W RGB tensors of equal shape, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}."
            )
        if min(x.shape[-2:]) < MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {MIN_SIZE[self.net]} x "
                f"{MIN_SIZE[self.net]} pixels, got {x.shape[-2]} x {x.shape[-1]}."
            )
        features_x = self.backbone((2 * x - 1 - self.shift) / self.scale)
        features_y = self.backbone((2 * y - 1 - self.shift) / self.scale)
        distance = x.new_zeros(x.shape[0])
        for name, head in zip(LAYERS[self.net], self.heads):
            diff = (unit_normalize(features_x[name]) - unit_normalize(features_y[name])) ** 2
            distance = distance + head(diff).mean(dim=(1, 2, 3))
        return distance


@functools.lru_cache(maxsize=8)
def _cached_network(net: str, weights_path: str, lin_path: str, device: str) -> LPIPS:
    return LPIPS(net, weights_path, lin_path).to(device)


def get_lpips_network(
    net: str = "alex",
    weights_path: str | None = None,
    lin_path: str | None = None,
    device: str | torch.device | None = None,
) -> LPIPS:
    """The LPIPS network for these files on ``device``, built once per process and reused."""
    check_net(net)
    weights_path = str(Path(weights_path or BACKBONE_WEIGHTS[net].default_path).resolve())
    lin_path = str(Path(lin_path or default_head_path(net)).resolve())
    return _cached_network(
        net, weights_path, lin_path, str(torch.device(device or default_device()))
    )


def lpips_pt(
    x: torch.Tensor,
    y: torch.Tensor,
    net: str = "alex",
    weights_path: str | None = None,
    lin_path: str | None = None,
) -> torch.Tensor:
    """LPIPS (shape B) of B x 3 x H x W RGB tensors in [0, 1], on their device.

    Differentiable with respect to ``x`` and ``y`` (the network itself is frozen), so it can
    serve as a perceptual loss.
    """
    return get_lpips_network(net, weights_path, lin_path, x.device)(x, y)


@METRIC_REGISTRY.register()
def calculate_lpips(
    img: np.ndarray,
    img2: np.ndarray,
    net: str = "alex",
    weights_path: str | None = None,
    lin_path: str | None = None,
    crop_border: int = 0,
    input_order: str = "HWC",
    device: str | None = None,
) -> float:
    """LPIPS between two BGR images in [0, 255] (uint8 or float; H x W x 3 by default).

    ``crop_border`` pixels are removed from each side first. ``device``: where the network runs
    (default: CUDA when available). Raises :class:`MissingWeightsError` when a file is missing.
    """
    img, img2 = prepare_pair(img, img2, crop_border, input_order, test_y_channel=False)
    if img.shape[2] != 3:
        raise ValueError(f"LPIPS needs 3-channel BGR images, got shape {img.shape}.")
    network = get_lpips_network(net, weights_path, lin_path, device)
    device = network.shift.device

    def to_tensor(image: np.ndarray) -> torch.Tensor:
        rgb = np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1)) / 255.0
        return torch.from_numpy(rgb).to(device=device, dtype=torch.float32).unsqueeze(0)

    with torch.no_grad():
        return float(network(to_tensor(img), to_tensor(img2))[0])
