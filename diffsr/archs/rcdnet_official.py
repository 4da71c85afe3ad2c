"""RCDNet's released checkpoint layout (hongwang01/RCDNet, class ``Mainnet``).

The authors save ``model.state_dict()`` (a bare state dict, legacy file format) of a network
whose parameters are named after the paper's symbols:

- ``w_z_f`` (Z x 3 x 3 x 3): filter for the initial dual channels -> ``dual_init``;
- ``tau`` (1): threshold of the first rain residual -> ``rain_threshold``;
- ``weight0`` (3 x N x k x k): rain kernels of the first rain-map update -> ``first_rain_kernels``;
- ``conv`` (S-1 x 3 x N x k x k): the shared rain kernels, stored once per stage of which the
  forward pass only reads ``conv[1]`` -> ``rain_kernels``;
- ``eta2`` (1) and ``eta12`` (S-1 x 1): background step sizes -> ``background_steps`` (S);
  ``eta11`` (S-1 x 1): rain-map step sizes -> ``rain_map_steps`` (S-1);
- ``xnet``, ``x_stage.<s>``, ``fxnet``: B-nets (``resx1..4`` = conv, BN, ReLU, conv, BN)
  -> ``initial_background_net``, ``background_nets.<s>``, ``refine_net``;
- ``m_stage.<s>``: M-nets (``resm1..4`` and threshold ``tau``) -> ``rain_map_nets.<s>``.

The forward pass of the release never reads ``eta1``, the M-net ``mnet`` or the kernel copies
``conv[i]``, ``i != 1`` (191,169 parameters for S = 17). diffsr's RCDNet does not hold them:
the converter checks that the file has exactly these keys and drops them with a log line.
"""

from __future__ import annotations

import torch

from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.utils.logger import get_root_logger

__all__ = ["RCDNET_LAYOUT", "convert_released_rcdnet", "released_rcdnet_keys"]

NUM_BLOCKS = 4  # the released proximal nets always have 4 residual blocks (its T is unused)
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
UNUSED_KEYS = ("eta1",)
UNUSED_PREFIX = "mnet."  # the M-net the release builds but never calls


def _block_keys(prefix: str, block: str) -> list[str]:
    """Keys of the residual blocks ``<prefix><block>1..4`` (conv, BN, ReLU, conv, BN)."""
    keys = []
    for i in range(1, NUM_BLOCKS + 1):
        for conv in (0, 3):
            keys += [f"{prefix}{block}{i}.{conv}.weight", f"{prefix}{block}{i}.{conv}.bias"]
        for bn in (1, 4):
            keys += [f"{prefix}{block}{i}.{bn}.{name}" for name in BN_KEYS]
    return keys


def _proximal_net_keys(prefix: str, block: str) -> list[str]:
    """Keys of one released Xnet (``block='resx'``) or Mnet (``'resm'``, plus ``tau``)."""
    return _block_keys(prefix, block) + ([f"{prefix}tau"] if block == "resm" else [])


def released_rcdnet_keys(num_stages: int) -> set[str]:
    """Every key of the released ``Mainnet`` state dict with ``stage = num_stages``."""
    keys = {"eta1", "eta2", "eta11", "eta12", "weight0", "conv", "w_z_f", "tau"}
    keys.update(_proximal_net_keys("xnet.", "resx"), _proximal_net_keys("fxnet.", "resx"))
    keys.update(_proximal_net_keys("mnet.", "resm"))
    for s in range(num_stages):
        keys.update(_proximal_net_keys(f"x_stage.{s}.", "resx"))
        keys.update(_proximal_net_keys(f"m_stage.{s}.", "resm"))
    return keys


def _num_stages(state: StateDict) -> int:
    """S from ``eta11`` (S-1 x 1); raises KeyError / AttributeError when absent or not a tensor."""
    return state["eta11"].shape[0] + 1


def matches_released_rcdnet(state: StateDict) -> bool:
    """True for the exact key set of a released ``Mainnet`` with consistent shapes (S >= 3)."""
    try:
        num_stages = _num_stages(state)
        if not 3 <= num_stages <= len(state) or set(state) != released_rcdnet_keys(num_stages):
            return False
        kernels, copies = state["weight0"].shape, state["conv"].shape
        return (
            len(kernels) == 4
            and kernels[0] == 3
            and tuple(copies) == (num_stages - 1, *kernels)
            and tuple(state["eta12"].shape) == (num_stages - 1, 1)
            and tuple(state["eta2"].shape) == (1,)
            and state["w_z_f"].shape[1:] == (3, 3, 3)
        )
    except (AttributeError, IndexError, KeyError, TypeError):
        return False


def _rename_blocks(
    state: StateDict, theirs: str, ours: str, block: str, out: dict[str, torch.Tensor]
) -> None:
    """Residual blocks ``<theirs><block><i>.<j>.*`` -> ``<ours><i-1>.body.<j>.*``."""
    for key in _block_keys(theirs, block):
        index, tail = key[len(theirs) + len(block) :].split(".", 1)
        out[f"{ours}{int(index) - 1}.body.{tail}"] = state[key]


def _is_parameter(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def convert_released_rcdnet(state: StateDict) -> dict[str, torch.Tensor]:
    """Released ``Mainnet`` state dict -> diffsr ``RCDNet`` keys (unused tensors dropped).

    The result loads strictly into ``RCDNet(num_stages=S, num_rain_kernels=N,
    num_dual_channels=Z, kernel_size=k)`` with the sizes of the file (paper: 17, 32, 32, 9).
    """
    if not matches_released_rcdnet(state):
        raise ValueError(
            "convert_released_rcdnet: the state dict is not in the released RCDNet layout "
            "(hongwang01/RCDNet Mainnet: keys eta1/eta2/eta11/eta12/weight0/conv/w_z_f/tau, "
            "xnet, mnet, x_stage.<s>, m_stage.<s>, fxnet)."
        )
    num_stages = _num_stages(state)
    out: dict[str, torch.Tensor] = {
        "dual_init": state["w_z_f"],
        "rain_threshold": state["tau"],
        "first_rain_kernels": state["weight0"],
        "rain_kernels": state["conv"][1].clone(),
        "rain_map_steps": state["eta11"][:, 0].clone(),
        "background_steps": torch.cat([state["eta2"], state["eta12"][:, 0]]),
    }
    _rename_blocks(state, "xnet.", "initial_background_net.", "resx", out)
    _rename_blocks(state, "fxnet.", "refine_net.", "resx", out)
    for s in range(num_stages):
        _rename_blocks(state, f"x_stage.{s}.", f"background_nets.{s}.", "resx", out)
        _rename_blocks(state, f"m_stage.{s}.", f"rain_map_nets.{s}.blocks.", "resm", out)
        out[f"rain_map_nets.{s}.threshold"] = state[f"m_stage.{s}.tau"]
    unused = [k for k in state if k in UNUSED_KEYS or k.startswith(UNUSED_PREFIX)]
    dropped = sum(state[k].numel() for k in unused if _is_parameter(k))
    dropped += state["conv"].numel() - state["conv"][1].numel()
    get_root_logger().info(
        f"RCDNet (released layout): dropped {dropped:,} parameters its forward never uses "
        f"(eta1, the M-net 'mnet', kernel copies conv[i] for i != 1)."
    )
    return out


RCDNET_LAYOUT = register_layout(
    OfficialLayout(
        name="RCDNet",
        arch_types=("RCDNet", "Mainnet"),
        repository="hongwang01/RCDNet",
        matches=matches_released_rcdnet,
        convert=convert_released_rcdnet,
        describe=lambda state: {"num_stages": _num_stages(state)},
    )
)
