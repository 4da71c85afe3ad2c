"""FSDGN's released checkpoint layout (yuhuUSTC/FSDGN, ``basicsr/archs/FSDGN_arch.py``).

The authors train with BasicSR, which saves ``{'params': ..., 'params_ema': ...}``
(``pretrained models/net_g_latest.pth``); their test loads ``params``. Their names -> diffsr's
:class:`~diffsr.archs.fsdgn_arch.FSDGN` (level k = 0..4, finest first; a trailing ``_`` after
the level marks the second stage, e.g. ``res2_`` and ``fusion_1_``):

- ``layer0`` / ``layer0_`` -> ``stage1_head`` / ``stage2_head``; ``concat`` -> ``stage2_merge``;
  ``last`` -> ``stage2_tail``; ``sam.conv1/2/3`` -> ``attention.features/to_image/from_image``;
- ``layer<k>.block.0`` -> ``stage<s>.down.<k-1>.0``; ``layer_<k>.up`` / ``.conv_block.0`` ->
  ``stage<s>.up.<k>.up`` / ``.merge.0``;
- ``res<k>`` / ``res_<k>`` (``layers.0/2`` -> ``body.0/2``, ``conv_1x1`` -> ``shortcut``) ->
  ``stage<s>.encoder_blocks.<k>`` / ``decoder_blocks.<k>`` (stage 1: ``.0``, followed by
  ``fft<k>`` / ``fft_<k>`` as ``.1`` with ``main/mag/pha`` -> ``spatial/amplitude/phase``);
- ``fusion<k>`` (encoder side: ``up_convs.<j>.deconv/act`` -> ``project.<j>.0/1``,
  ``down_convs.<j>.conv/act`` -> ``project_back.<j>.0/1``) -> ``stage<s>.encoder_fusion.<k-1>``;
  ``fusion_<k>`` (decoder side: ``down_convs`` -> ``project``, ``up_convs`` -> ``project_back``)
  -> ``stage<s>.decoder_fusion.<k>``;
- ``csff_enc<k>`` / ``csff_dec<k>`` -> ``cross_encoder.<k>`` / ``cross_decoder.<k>``.
"""

from __future__ import annotations

import re

import torch

from diffsr.archs.fsdgn_arch import FSDGN
from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.archs.official_rename import matches_network, rename_keys

__all__ = ["FSDGN_LAYOUT", "convert_released_fsdgn"]

# <module><level><stage 2 marker>.<rest>, e.g. "res_3_.layers.0.weight"
_LEVEL = re.compile(r"^(layer|layer_|res|res_|fft|fft_|fusion|fusion_)(\d)(_?)\.(.+)$")
_FIXED = {
    "layer0.": "stage1_head.",
    "layer0_.": "stage2_head.",
    "concat.": "stage2_merge.",
    "last.": "stage2_tail.",
    "sam.conv1.": "attention.features.",
    "sam.conv2.": "attention.to_image.",
    "sam.conv3.": "attention.from_image.",
}
_CROSS = re.compile(r"^csff_(enc|dec)(\d)\.(.+)$")
_RES_PARTS = {"layers.0.": "body.0.", "layers.2.": "body.2.", "conv_1x1.": "shortcut."}
_FFT_PARTS = {"main.": "spatial.", "mag.": "amplitude.", "pha.0.": "phase.0.", "pha.2.": "phase.2."}
_FUSION = re.compile(r"^(up_convs|down_convs)\.(\d+)\.(deconv|conv|act)\.(.+)$")


def _replace_prefix(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _fusion(rest: str, encoder_side: bool) -> str | None:
    """``up_convs/down_convs.<j>.<layer>`` -> ``project/project_back.<j>.<0|1>``."""
    part = _FUSION.match(rest)
    if part is None:
        return None
    towards_finer = part[1] == "up_convs"  # transposed convs
    name = "project" if towards_finer == encoder_side else "project_back"
    return f"{name}.{part[2]}.{1 if part[3] == 'act' else 0}.{part[4]}"


def _rename(key: str) -> str | None:
    fixed = _replace_prefix(key, _FIXED)
    if fixed is not None:
        return fixed
    cross = _CROSS.match(key)
    if cross:
        side = "encoder" if cross[1] == "enc" else "decoder"
        return f"cross_{side}.{cross[2]}.{cross[3]}"
    level = _LEVEL.match(key)
    if level is None:
        return None
    kind, k, stage, rest = level[1], int(level[2]), 2 if level[3] else 1, level[4]
    decoder = kind.endswith("_")
    if kind == "layer":
        return (
            f"stage{stage}.down.{k - 1}.0.{rest.removeprefix('block.0.')}"
            if (k > 0 and rest.startswith("block.0."))
            else None
        )
    if kind == "layer_":
        inner = _replace_prefix(rest, {"up.": "up.", "conv_block.0.": "merge.0."})
        return None if inner is None else f"stage{stage}.up.{k}.{inner}"
    if kind.startswith("fusion"):
        inner = _fusion(rest, encoder_side=not decoder)
        index = k if decoder else k - 1
        side = "decoder" if decoder else "encoder"
        return None if inner is None or index < 0 else f"stage{stage}.{side}_fusion.{index}.{inner}"
    blocks = "decoder_blocks" if decoder else "encoder_blocks"
    if kind.startswith("res"):
        inner = _replace_prefix(rest, _RES_PARTS)
        slot = ".0" if stage == 1 else ""
    else:  # fft: only in stage 1, after the residual block
        inner = _replace_prefix(rest, _FFT_PARTS) if stage == 1 else None
        slot = ".1"
    return None if inner is None else f"stage{stage}.{blocks}.{k}{slot}.{inner}"


def convert_released_fsdgn(state: StateDict) -> dict[str, torch.Tensor]:
    """A released FSDGN state dict (``params`` of their file) in diffsr's FSDGN keys."""
    return rename_keys(state, _rename)


FSDGN_LAYOUT = register_layout(
    OfficialLayout(
        name="FSDGN",
        arch_types=("FSDGN", "fusion_net"),
        repository="yuhuUSTC/FSDGN",
        matches=lambda state: matches_network(state, convert_released_fsdgn, FSDGN),
        convert=convert_released_fsdgn,
    )
)
