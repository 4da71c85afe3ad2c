"""VGG16 feature extractor for perceptual losses, loading torchvision's weight file by path.

The convolutional part is laid out exactly as torchvision's ``vgg16().features`` (an
``nn.Sequential`` of 31 layers), so ``features.N.weight`` / ``features.N.bias`` of the published
``vgg16-397923af.pth`` load directly without torchvision being installed.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = [
    "DEFAULT_VGG16_PATH",
    "VGG16_LAYER_NAMES",
    "VGG16_URL",
    "VGG16FeatureExtractor",
    "load_vgg16_features",
]

VGG16_FILE_NAME = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE_NAME}"
DEFAULT_VGG16_PATH = f"experiments/pretrained_models/{VGG16_FILE_NAME}"

# Output channels of the 3x3 convolutions of each of VGG16's five blocks.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_layer_names() -> tuple[str, ...]:
    """Names of the 31 layers of ``features`` in order: conv1_1, relu1_1, ..., relu5_3, pool5."""
    names = []
    for block, convs in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, len(convs) + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG16_LAYER_NAMES = vgg16_layer_names()


def build_vgg16_features(num_layers: int) -> nn.Sequential:
    """The first ``num_layers`` layers of VGG16's ``features`` (indices as in torchvision)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for convs in VGG16_BLOCKS:
        for out_channels in convs:
            # Not in-place: a requested conv output must not be overwritten by the next ReLU.
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers[:num_layers])


def missing_weights_message(path: str) -> str:
    return (
        f"VGG16 weights not found at {path!r}. Download torchvision's ImageNet VGG16 weights "
        f"{VGG16_FILE_NAME} from {VGG16_URL} and put the file at {DEFAULT_VGG16_PATH} (relative "
        f"to the directory you run from), or set the option to where the file is."
    )


def load_vgg16_features(features: nn.Sequential, path: str | Path) -> None:
    """Load ``features.*`` weights from a torchvision VGG16 state-dict file into ``features``.

    Keys beyond the truncated depth of ``features`` and ``classifier.*`` keys are ignored; any
    missing key, unknown key or shape mismatch raises a ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_weights_message(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a VGG16 state dict, got {type(state).__name__}.")
    unknown = [k for k in state if not k.startswith(("features.", "classifier."))]
    if unknown:
        raise ValueError(
            f"{path} is not a torchvision VGG16 state dict: unexpected keys {unknown[:5]}. "
            f"Expected the file {VGG16_FILE_NAME} from {VGG16_URL}."
        )
    wanted = {f"features.{key}": value for key, value in features.state_dict().items()}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(
            f"{path} lacks the VGG16 weights {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}; expected torchvision's {VGG16_FILE_NAME}."
        )
    for key, value in wanted.items():
        if state[key].shape != value.shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, expected "
                f"{tuple(value.shape)} (a VGG16 file is needed, not another VGG variant)."
            )
    features.load_state_dict(
        {key.removeprefix("features."): state[key] for key in wanted}, strict=True
    )


def check_layer_names(layer_names: Sequence[str]) -> list[str]:
    if isinstance(layer_names, str) or not layer_names:
        raise ValueError(f"layer_names must be a non-empty list of names, got {layer_names!r}.")
    for name in layer_names:
        if name not in VGG16_LAYER_NAMES:
            close = difflib.get_close_matches(str(name), VGG16_LAYER_NAMES, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown VGG16 layer {name!r}.{hint} Valid names: conv<b>_<i>, relu<b>_<i>, "
                f"pool<b>, e.g. relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."
            )
    return list(layer_names)


@ARCH_REGISTRY.register()
class VGG16FeatureExtractor(nn.Module):
    """Frozen ImageNet VGG16 returning the activations of named layers.

    Input: B x 3 x H x W RGB in [0, 1] (normalised with ImageNet mean / std inside when
    ``normalize_input``). Output: ``{name: B x C_l x H_l x W_l}`` for each of ``layer_names``.
    Only the layers up to the deepest requested one are built and run.

    Args:
        layer_names: layers to return, e.g. ``relu1_2, relu2_2, relu3_3`` (see VGG16_LAYER_NAMES).
        pretrained_path: torchvision's ``vgg16-397923af.pth``. ``None`` keeps a random
            initialisation and is only accepted together with ``allow_random_init`` (for tests).
        allow_random_init: permit ``pretrained_path=None``.
        normalize_input: subtract the ImageNet mean and divide by the std first.
    """

    def __init__(
        self,
        layer_names: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        pretrained_path: str | None = DEFAULT_VGG16_PATH,
        allow_random_init: bool = False,
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        self.layer_names = check_layer_names(layer_names)
        self.normalize_input = normalize_input
        depth = 1 + max(VGG16_LAYER_NAMES.index(name) for name in self.layer_names)
        self.features = build_vgg16_features(depth)
        if pretrained_path is not None:
            load_vgg16_features(self.features, pretrained_path)
        elif not allow_random_init:
            raise ValueError(
                "VGG16FeatureExtractor: pretrained_path is null. A perceptual loss needs "
                f"ImageNet weights: download {VGG16_FILE_NAME} from {VGG16_URL} into "
                "experiments/pretrained_models/ and give its path (allow_random_init: true "
                "permits random weights, for tests only)."
            )
        # Not persistent, so the state dict keys stay exactly torchvision's ``features.*``.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16FeatureExtractor:
        """Always stays in eval mode: the extractor is a fixed, pretrained measuring device."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"VGG16FeatureExtractor expects B x 3 x H x W RGB in [0, 1], got {tuple(x.shape)}."
            )
        if self.normalize_input:
            x = (x - self.mean) / self.std
        wanted = set(self.layer_names)
        outputs = {}
        for name, layer in zip(VGG16_LAYER_NAMES, self.features):
            x = layer(x)
            if name in wanted:
                outputs[name] = x
        return outputs
