"""EfDeRain's released checkpoint layout (tsingqguo/efficientderain, class ``KPN``).

The authors save ``generator.state_dict()`` as a bare state dict (``KPN_rainy_image_*.pth``;
the released ``v3_*.pth`` / ``v4_*.pth`` files). Their U-Net levels are ``conv1`` .. ``conv8``
(``Basic`` blocks whose three convolutions are ``conv1.0``, ``conv1.2``, ``conv1.4``), then
``outc`` (1x1) and ``conv_final`` (the fusion of the four dilations). diffsr's
:class:`~diffsr.archs.efderain_arch.EfDeRain` holds the same tensors under other names:
encoder levels ``conv1..5`` -> ``kernel_net.encoder.0..4``, decoder levels ``conv6..8`` ->
``kernel_net.decoder.0..2``, ``outc`` -> ``kernel_net.out_conv``, ``conv_final`` -> ``fusion``.
"""

from __future__ import annotations

import torch

from diffsr.archs.official import OfficialLayout, StateDict, register_layout

__all__ = ["EFDERAIN_LAYOUT", "convert_released_efderain", "released_efderain_key_map"]

NUM_ENCODER_LEVELS = 5
NUM_DECODER_LEVELS = 3


def released_efderain_key_map() -> dict[str, str]:
    """Released ``KPN`` key -> diffsr ``EfDeRain`` key, for every tensor of the file."""
    mapping = {}
    for level in range(1, NUM_ENCODER_LEVELS + NUM_DECODER_LEVELS + 1):
        if level <= NUM_ENCODER_LEVELS:
            ours = f"kernel_net.encoder.{level - 1}"
        else:
            ours = f"kernel_net.decoder.{level - 1 - NUM_ENCODER_LEVELS}"
        for conv in (0, 2, 4):
            for name in ("weight", "bias"):
                mapping[f"conv{level}.conv1.{conv}.{name}"] = f"{ours}.{conv}.{name}"
    for theirs, ours in (("outc", "kernel_net.out_conv"), ("conv_final", "fusion")):
        for name in ("weight", "bias"):
            mapping[f"{theirs}.{name}"] = f"{ours}.{name}"
    return mapping


def matches_released_efderain(state: StateDict) -> bool:
    """Exactly the released ``KPN`` keys (no attention), RGB input, four dilations fused."""
    try:
        return (
            set(state) == set(released_efderain_key_map())
            and state["conv1.conv1.0.weight"].shape[1] == 3
            and tuple(state["conv_final.weight"].shape) == (3, 12, 3, 3)
        )
    except (AttributeError, IndexError, KeyError, TypeError):
        return False


def convert_released_efderain(state: StateDict) -> dict[str, torch.Tensor]:
    """Released ``KPN`` state dict -> diffsr ``EfDeRain`` keys (a renaming).

    The result loads strictly into ``EfDeRain(kernel_size=k)`` with the file's ``k`` (the
    released models: 3, 27 kernel channels).
    """
    if not matches_released_efderain(state):
        raise ValueError(
            "convert_released_efderain: the state dict is not in the released EfDeRain layout "
            "(tsingqguo/efficientderain KPN: conv1..conv8 .conv1.{0,2,4}, outc, conv_final)."
        )
    mapping = released_efderain_key_map()
    return {mapping[key]: tensor for key, tensor in state.items()}


EFDERAIN_LAYOUT = register_layout(
    OfficialLayout(
        name="EfDeRain",
        arch_types=("EfDeRain", "KPN"),
        repository="tsingqguo/efficientderain",
        matches=matches_released_efderain,
        convert=convert_released_efderain,
    )
)
