"""MSBDN-DFF's released checkpoint layout (BookerDeWitt/MSBDN-DFF, ``networks/MSBDN-DFF-v1-1.py``).

The authors save the whole module (``torch.save(model)``); the loader extracts its state dict
with a restricted unpickler and hands it here. Their keys, level ``k`` = 1..4 being the
``2**k``-times downsampled scale:

- ``conv_input.conv2d``, ``conv_output.conv2d``: the input and output convs;
- ``dense{0..3}.{i}`` / ``dense_{1..4}.{i}``: encoder / decoder residual blocks
  (``conv1.conv2d``, ``conv2.conv2d``, ``relu`` the PReLU), ``dehaze.res{i}`` the bottleneck's;
- ``conv{2,4,8,16}x.conv2d``: the stride-2 encoder convs; ``convd{16,8,4,2}x.conv2d``: the
  decoder's transposed convs;
- ``fusion{1..4}`` / ``fusion_{1..4}``: encoder / decoder dense feature fusion, with
  ``up_convs.{j}.deconv`` / ``down_convs.{j}.conv`` and their PReLUs ``.act``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from diffsr.archs.official import OfficialLayout, register_layout
from diffsr.archs.official_rename import rename_keys

__all__ = ["MSBDN_DFF_LAYOUT", "convert_msbdn", "matches_msbdn"]


def _level(scale: str) -> int:
    """``"16"`` (from ``conv16x``) -> 4."""
    return int(scale).bit_length() - 1


def _fusion(side: str, number: str, direction: str, j: str, kind: str) -> str:
    """Key prefix of diffsr's DenseFeatureFusion for a release fusion block's resampler."""
    # encoder fusion k (its up_convs go to finer scales) is diffsr's encoder_fusion[k - 1],
    # whose ``project`` chain goes towards the other features; the decoder's is the mirror.
    towards_others = (direction == "up") == (side == "encoder")
    chain = "project" if towards_others else "project_back"
    part = "1" if kind == "act" else "0"
    return f"{side}_fusion.{int(number) - 1}.{chain}.{j}.{part}."


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"conv_input\.conv2d\.(weight|bias)"), lambda m: f"conv_in.{m[1]}"),
    (re.compile(r"conv_output\.conv2d\.(weight|bias)"), lambda m: f"conv_out.{m[1]}"),
    (
        re.compile(r"dense(\d)\.(\d+)\.(conv[12])\.conv2d\.(weight|bias)"),
        lambda m: f"encoder_groups.{m[1]}.{m[2]}.{m[3]}.{m[4]}",
    ),
    (
        re.compile(r"dense(\d)\.(\d+)\.relu\.weight"),
        lambda m: f"encoder_groups.{m[1]}.{m[2]}.act.weight",
    ),
    (
        re.compile(r"dense_(\d)\.(\d+)\.(conv[12])\.conv2d\.(weight|bias)"),
        lambda m: f"decoder_groups.{int(m[1]) - 1}.{m[2]}.{m[3]}.{m[4]}",
    ),
    (
        re.compile(r"dense_(\d)\.(\d+)\.relu\.weight"),
        lambda m: f"decoder_groups.{int(m[1]) - 1}.{m[2]}.act.weight",
    ),
    (
        re.compile(r"dehaze\.res(\d+)\.(conv[12])\.conv2d\.(weight|bias)"),
        lambda m: f"bottleneck.{m[1]}.{m[2]}.{m[3]}",
    ),
    (re.compile(r"dehaze\.res(\d+)\.relu\.weight"), lambda m: f"bottleneck.{m[1]}.act.weight"),
    (
        re.compile(r"conv(2|4|8|16)x\.conv2d\.(weight|bias)"),
        lambda m: f"downsample.{_level(m[1]) - 1}.{m[2]}",
    ),
    (
        re.compile(r"convd(2|4|8|16)x\.conv2d\.(weight|bias)"),
        lambda m: f"upsample.{_level(m[1]) - 1}.{m[2]}",
    ),
    (
        re.compile(r"fusion(_?)(\d)\.(up|down)_convs\.(\d+)\.(deconv|conv|act)\.(weight|bias)"),
        lambda m: _fusion("decoder" if m[1] else "encoder", m[2], m[3], m[4], m[5]) + m[6],
    ),
]

# Keys only this network's release has (checked together with "every key has a rule").
_SIGNATURE = (
    "conv_input.conv2d.weight",
    "dehaze.res0.conv1.conv2d.weight",
    "fusion1.up_convs.0.deconv.weight",
    "fusion_1.down_convs.0.conv.weight",
    "convd2x.conv2d.weight",
)


def _rename(key: str) -> str | None:
    for pattern, target in _RULES:
        match = pattern.fullmatch(key)
        if match:
            return target(match)
    return None


def _bottleneck_blocks(state: Mapping[str, torch.Tensor]) -> int:
    """The number of bottleneck residual blocks (``dehaze.res<i>``) in a released file."""
    found = {re.match(r"dehaze\.res(\d+)\.", key) for key in state}
    return len({m[1] for m in found if m})


def matches_msbdn(state: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state`` has the release's keys and nothing else."""
    return all(key in state for key in _SIGNATURE) and all(
        _rename(key) is not None for key in state
    )


def convert_msbdn(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's state dict renamed into :class:`diffsr.archs.msbdn_arch.MSBDN`'s keys."""
    return rename_keys(state, _rename)


MSBDN_DFF_LAYOUT = register_layout(
    OfficialLayout(
        name="MSBDN-DFF",
        arch_types=("MSBDN", "MSBDN-DFF", "MSBDN-DFF-v1-1"),
        repository="BookerDeWitt/MSBDN-DFF",
        matches=matches_msbdn,
        convert=convert_msbdn,
        describe=lambda state: {"res_blocks": _bottleneck_blocks(state)},
    )
)
