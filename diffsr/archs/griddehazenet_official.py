"""GridDehazeNet's released checkpoint layout (proteus1991/GridDehazeNet, class ``GateHazeNet``).

The authors' test script loads ``{indoor,outdoor}_haze_best_3_6`` with
``nn.DataParallel(net).load_state_dict(torch.load(...))``: a bare state dict with ``module.``
prefixes. Its names -> diffsr's :class:`~diffsr.archs.griddehazenet_arch.GridDehazeNet`:

- ``conv_in``, ``conv_out`` unchanged; ``rdb_in``, ``rdb_out`` unchanged outside the block;
- ``rdb_module.<i>_<j>`` -> ``lateral.<i>.<j>``; ``downsample_module.<i>_<j>.conv1/conv2`` ->
  ``down.<i>.<j>.0/2``; ``upsample_module.<i>_<j>`` -> ``up.<i>.<j - columns // 2>``;
- inside a residual dense block ``residual_dense_layers.<l>.conv`` -> ``layers.<l>`` and
  ``conv_1x1`` -> ``fuse``;
- ``coefficient`` (rows x columns x 2 x base * 2**(rows-1)) holds the junction weights:
  ``coefficient[i, j, :, :C_i]`` -> ``junction_weights.<i>_<j>`` for the junctions the forward
  pass uses (C_i = base * 2**i channels); the other entries are never read and are dropped.
"""

from __future__ import annotations

import re

import torch

from diffsr.archs.griddehazenet_arch import GridDehazeNet
from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.archs.official_rename import matches_network, rename_keys

__all__ = ["GRIDDEHAZENET_LAYOUT", "convert_released_griddehazenet"]

_RDB = re.compile(r"^(rdb_in|rdb_out|rdb_module\.(\d+)_(\d+))\.(.*)$")
_DOWN = re.compile(r"^downsample_module\.(\d+)_(\d+)\.conv([12])\.(weight|bias)$")
_UP = re.compile(r"^upsample_module\.(\d+)_(\d+)\.(deconv|conv)\.(weight|bias)$")
_DENSE = re.compile(r"^residual_dense_layers\.(\d+)\.conv\.(weight|bias)$")


def _rdb_inner(rest: str) -> str | None:
    dense = _DENSE.match(rest)
    if dense:
        return f"layers.{dense[1]}.{dense[2]}"
    return "fuse." + rest.removeprefix("conv_1x1.") if rest.startswith("conv_1x1.") else None


def _renamer(half: int):
    def rename(key: str) -> str | None:
        if key.startswith(("conv_in.", "conv_out.")):
            return key
        rdb = _RDB.match(key)
        if rdb:
            inner = _rdb_inner(rdb[4])
            block = rdb[1] if rdb[2] is None else f"lateral.{rdb[2]}.{rdb[3]}"
            return None if inner is None else f"{block}.{inner}"
        down = _DOWN.match(key)
        if down:
            return f"down.{down[1]}.{down[2]}.{0 if down[3] == '1' else 2}.{down[4]}"
        up = _UP.match(key)
        if up and int(up[2]) >= half:
            return f"up.{up[1]}.{int(up[2]) - half}.{up[3]}.{up[4]}"
        return None

    return rename


def _junction_weights(coefficient: torch.Tensor) -> dict[str, torch.Tensor]:
    rows, columns, two, widest = coefficient.shape
    if two != 2 or widest % 2 ** (rows - 1):
        raise ValueError(f"coefficient has shape {tuple(coefficient.shape)}")
    base, half = widest // 2 ** (rows - 1), columns // 2
    return {
        f"junction_weights.{i}_{j}": coefficient[i, j, :, : base * 2**i].clone()
        for i in range(rows)
        for j in range(1, columns)
        if (j < half and i > 0) or (j >= half and i < rows - 1)
    }


def convert_released_griddehazenet(state: StateDict) -> dict[str, torch.Tensor]:
    """A released GridDehazeNet state dict (no ``module.`` prefixes) in diffsr's keys."""
    coefficient = state["coefficient"]
    layers = {k: v for k, v in state.items() if k != "coefficient"}
    converted = rename_keys(layers, _renamer(coefficient.shape[1] // 2))
    return {**converted, **_junction_weights(coefficient)}


GRIDDEHAZENET_LAYOUT = register_layout(
    OfficialLayout(
        name="GridDehazeNet",
        arch_types=("GridDehazeNet", "GateHazeNet"),
        repository="proteus1991/GridDehazeNet",
        matches=lambda state: matches_network(state, convert_released_griddehazenet, GridDehazeNet),
        convert=convert_released_griddehazenet,
    )
)
