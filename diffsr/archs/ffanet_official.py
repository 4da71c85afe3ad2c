"""FFA-Net's released checkpoint layout (zhilin007/FFA-Net, class ``FFA(gps=3, blocks=19)``).

The authors' training script saves ``{'step', 'max_psnr', 'max_ssim', 'ssims', 'psnrs',
'losses', 'model'}`` with ``model`` the state dict of the ``nn.DataParallel`` network
(``module.`` prefixes) and numpy float64 metrics (files ``its_train_ffa_3_19.pk``,
``ots_train_ffa_3_19.pk``). Its names -> diffsr's :class:`~diffsr.archs.ffanet_arch.FFANet`:

- ``pre.0`` -> ``head``; ``post.0``, ``post.1`` -> ``tail.0``, ``tail.1``;
- ``g<G>.gp.<b>`` (G = 1..3) -> ``groups.<G-1>.<b>``; inside a block ``calayer.ca`` ->
  ``channel_attention.gate``, ``palayer.pa`` -> ``pixel_attention.gate``;
- ``ca.1``, ``ca.3`` (the fusion channel attention after its pooling) -> ``fusion_gate.0``,
  ``fusion_gate.2``; ``palayer.pa`` -> ``fusion_pixel_attention.gate``.
"""

from __future__ import annotations

import re

import torch

from diffsr.archs.ffanet_arch import FFANet
from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.archs.official_rename import matches_network, rename_keys

__all__ = ["FFANET_LAYOUT", "convert_released_ffanet"]

_GROUP = re.compile(r"^g(\d+)\.gp\.(\d+)\.(.*)$")
_BLOCK_PARTS = {"calayer.ca.": "channel_attention.gate.", "palayer.pa.": "pixel_attention.gate."}
_TOP = {
    "pre.0.": "head.",
    "post.0.": "tail.0.",
    "post.1.": "tail.1.",
    "ca.1.": "fusion_gate.0.",
    "ca.3.": "fusion_gate.2.",
    "palayer.pa.": "fusion_pixel_attention.gate.",
}


def _replace_prefix(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _rename(key: str) -> str | None:
    group = _GROUP.match(key)
    if group is None:
        return _replace_prefix(key, _TOP)
    index, block, rest = int(group[1]), group[2], group[3]
    if index < 1:
        return None
    if not rest.startswith(("conv1.", "conv2.", "weight", "bias")):
        rest = _replace_prefix(rest, _BLOCK_PARTS)
    return None if rest is None else f"groups.{index - 1}.{block}.{rest}"


def convert_released_ffanet(state: StateDict) -> dict[str, torch.Tensor]:
    """A released FFA-Net state dict (no ``module.`` prefixes) in diffsr's FFANet keys."""
    return rename_keys(state, _rename)


FFANET_LAYOUT = register_layout(
    OfficialLayout(
        name="FFA-Net",
        arch_types=("FFANet", "FFA"),
        repository="zhilin007/FFA-Net",
        matches=lambda state: matches_network(state, convert_released_ffanet, FFANet),
        convert=convert_released_ffanet,
        arch_kwargs={"gps": 3, "blocks": 19},
    )
)
