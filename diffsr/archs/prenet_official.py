"""PReNet's released checkpoint layout (csdwren/PReNet, class ``PReNet``).

The authors save ``model.state_dict()`` as a bare state dict in the legacy (pre-zip) file
format, with CUDA tensors (``logs/<data set>/PReNet6/net_latest.pth``, ``logs/real/PReNet1.pth``
and ``PReNet2.pth``). Each layer is a ``Sequential`` whose convolution is ``.0``: ``conv0`` ->
``head.0``, the LSTM gates ``conv_i/f/g/o`` -> ``recurrent.input_gate / forget_gate /
cell_candidate / output_gate``, ``res_conv1..5.{0,2}`` -> ``res_blocks.0..4.body.{0,2}``,
``conv`` -> ``tail``.

The repository's other networks (``PReNet_r``, ``PRN``, ``PRN_r``, ``PReNet_GRU``,
``PReNet_x``) have other keys or shapes and do not match. Its ablation ``PReNet_LSTM`` files
(``logs/Ablation/PReNet*_LSTM``, ``PReNet6_RecSSIM``) have exactly PReNet's keys but a forward
without the input residual: no layout can tell them apart, and diffsr computes PReNet's function
with them.
"""

from __future__ import annotations

import torch

from diffsr.archs.official import OfficialLayout, StateDict, register_layout

__all__ = ["PRENET_LAYOUT", "convert_released_prenet", "released_prenet_key_map"]

NUM_RES_BLOCKS = 5
GATES = {
    "conv_i": "input_gate",
    "conv_f": "forget_gate",
    "conv_g": "cell_candidate",
    "conv_o": "output_gate",
}


def released_prenet_key_map() -> dict[str, str]:
    """Released ``PReNet`` key -> diffsr ``PReNet`` key, for every tensor of the file."""
    layers = {"conv0.0": "head.0", "conv.0": "tail"}
    layers.update({f"{theirs}.0": f"recurrent.{ours}" for theirs, ours in GATES.items()})
    for i in range(1, NUM_RES_BLOCKS + 1):
        for conv in (0, 2):
            layers[f"res_conv{i}.{conv}"] = f"res_blocks.{i - 1}.body.{conv}"
    return {
        f"{theirs}.{name}": f"{ours}.{name}"
        for theirs, ours in layers.items()
        for name in ("weight", "bias")
    }


def matches_released_prenet(state: StateDict) -> bool:
    """Exactly the released ``PReNet`` keys, with its 6-channel input ``[O, x_{t-1}]``."""
    try:
        return (
            set(state) == set(released_prenet_key_map())
            and state["conv0.0.weight"].shape[1] == 6
            and state["conv.0.weight"].shape[0] == 3
        )
    except (AttributeError, IndexError, KeyError, TypeError):
        return False


def convert_released_prenet(state: StateDict) -> dict[str, torch.Tensor]:
    """Released ``PReNet`` state dict -> diffsr ``PReNet`` keys (a renaming).

    The result loads strictly into ``PReNet(num_channels=C)`` with the file's width (the
    released models: 32).
    """
    if not matches_released_prenet(state):
        raise ValueError(
            "convert_released_prenet: the state dict is not in the released PReNet layout "
            "(csdwren/PReNet PReNet: conv0, conv_i/f/g/o, res_conv1..5, conv; 6 input channels)."
        )
    mapping = released_prenet_key_map()
    return {mapping[key]: tensor for key, tensor in state.items()}


PRENET_LAYOUT = register_layout(
    OfficialLayout(
        name="PReNet",
        arch_types=("PReNet",),
        repository="csdwren/PReNet",
        matches=matches_released_prenet,
        convert=convert_released_prenet,
    )
)
