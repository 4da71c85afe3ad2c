"""The released IAT checkpoints (cuiziteng/Illumination-Adaptive-Transformer, ``IAT_enhance``).

The authors save ``model.state_dict()`` bare (``best_Epoch_lol.pth``, ``best_Epoch_lol_v1.pth``,
``best_Epoch_exposure.pth``; the same layout for all three). Their ``IAT`` holds
``local_net.*`` (stem ``conv1``, ``mul_blocks``/``add_blocks`` of ``CBlock_ln`` with
``Aff_channel`` norms whose ``alpha``/``beta`` are ``1 x 1 x C``, heads ``mul_end``/``add_end``)
and ``global_net.*`` (``conv_large.proj`` stem, ``generator`` query block, ``gamma_linear``,
``color_linear``, ``gamma_base``, ``color_base``).
"""

from __future__ import annotations

import torch

from diffsr.archs.iat_arch import IAT
from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.archs.official_keys import from_authors, rename_by_rules, to_authors
from diffsr.archs.official_rename import matches_network

__all__ = ["LAYOUT", "from_official", "official_key", "to_official"]

_AFFINE = (".norm1.scale", ".norm1.shift", ".norm2.scale", ".norm2.shift")  # 1 x 1 x C released
_BLOCK = r"local_branch\.(mul|add)_blocks\.(\d+)\."
_THEIR_BLOCK = r"local_net.\1_blocks.\2."
RULES = [
    (r"local_branch\.stem\.0\.(.+)", r"local_net.conv1.\1"),
    (_BLOCK + r"layer_scale([12])", _THEIR_BLOCK + r"gamma_\3"),
    (_BLOCK + r"norm([12])\.mix", _THEIR_BLOCK + r"norm\3.color"),
    (_BLOCK + r"norm([12])\.scale", _THEIR_BLOCK + r"norm\3.alpha"),
    (_BLOCK + r"norm([12])\.shift", _THEIR_BLOCK + r"norm\3.beta"),
    (_BLOCK + r"token_mixer\.0\.(.+)", _THEIR_BLOCK + r"conv1.\3"),
    (_BLOCK + r"token_mixer\.1\.(.+)", _THEIR_BLOCK + r"attn.\3"),
    (_BLOCK + r"token_mixer\.2\.(.+)", _THEIR_BLOCK + r"conv2.\3"),
    (_BLOCK + r"mlp\.0\.(.+)", _THEIR_BLOCK + r"mlp.fc1.\3"),
    (_BLOCK + r"mlp\.2\.(.+)", _THEIR_BLOCK + r"mlp.fc2.\3"),
    (_BLOCK + r"pos_embed\.(.+)", _THEIR_BLOCK + r"pos_embed.\3"),
    (r"local_branch\.(mul|add)_head\.0\.(.+)", r"local_net.\1_end.0.\2"),
    (r"global_branch\.(gamma_base|color_base)", r"global_net.\1"),
    (r"global_branch\.stem\.(.+)", r"global_net.conv_large.proj.\1"),
    (r"global_branch\.(pos_embed|norm1|norm2)\.(.+)", r"global_net.generator.\1.\2"),
    (r"global_branch\.attn\.queries", r"global_net.generator.attn.q"),
    (r"global_branch\.attn\.key\.(.+)", r"global_net.generator.attn.k.\1"),
    (r"global_branch\.attn\.value\.(.+)", r"global_net.generator.attn.v.\1"),
    (r"global_branch\.attn\.proj\.(.+)", r"global_net.generator.attn.proj.\1"),
    (r"global_branch\.mlp\.0\.(.+)", r"global_net.generator.mlp.fc1.\1"),
    (r"global_branch\.mlp\.2\.(.+)", r"global_net.generator.mlp.fc2.\1"),
    (r"global_branch\.gamma_head\.(.+)", r"global_net.gamma_linear.\1"),
    (r"global_branch\.color_head\.(.+)", r"global_net.color_linear.\1"),
]


def official_key(key: str) -> str:
    """diffsr's IAT key -> the authors' key."""
    return rename_by_rules(key, RULES)


def from_official(state: StateDict) -> dict[str, torch.Tensor]:
    """A released IAT state dict under diffsr's keys (the norms' ``1 x 1 x C`` made ``C``)."""
    renamed = from_authors(state, IAT, official_key)
    return {k: v.reshape(-1) if k.endswith(_AFFINE) else v for k, v in renamed.items()}


def to_official(state: StateDict) -> dict[str, torch.Tensor]:
    """diffsr's IAT state dict under the authors' keys and shapes."""
    renamed = to_authors(state, official_key)
    return {
        k: v.reshape(1, 1, -1) if k.endswith((".alpha", ".beta")) else v for k, v in renamed.items()
    }


def _matches(state: StateDict) -> bool:
    # Cheap rejection before the network's shapes are first computed.
    if "local_net.mul_blocks.0.norm1.color" not in state:
        return False
    return matches_network(state, from_official, IAT)


LAYOUT = register_layout(
    OfficialLayout(
        name="IAT",
        arch_types=("IAT",),
        repository="cuiziteng/Illumination-Adaptive-Transformer",
        matches=_matches,
        convert=from_official,
    )
)
