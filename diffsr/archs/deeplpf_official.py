"""DeepLPF's released checkpoint layout (sjmoran/DeepLPF, ``model.py`` / ``unet.py``).

The authors save ``net.state_dict()`` of ``DeepLPFNet`` (a bare state dict). Their keys:

- ``backbonenet.unet.dconv_down{1..5}`` (encoder and bottleneck), ``up_conv1x1_{1..4}``,
  ``dconv_up{4..1}``, ``conv_last``: the U-Net's double convs (``conv1``, ``conv2``) and 1x1
  convs; ``backbonenet.final_conv``: the 3 -> 64 conv whose channels 0-2 are the image and
  3-63 the features;
- ``deeplpfnet.{cubic,graduated,elliptical}_filter.<kind>_layer{1,3,5,7}.conv`` and
  ``fc_<kind>``: the three regression heads;
- ``backbonenet.unet.conv1``-``conv3`` and ``local_net``: allocated but never used by the
  release's forward (53,568 parameters); the converter drops them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

import torch

from diffsr.archs.official import OfficialLayout, register_layout
from diffsr.archs.official_rename import rename_keys

__all__ = ["DEEPLPF_LAYOUT", "convert_deeplpf", "matches_deeplpf"]

_UNUSED = re.compile(r"backbonenet\.unet\.(conv[123]|local_net\.conv[12])\.(weight|bias)")
_HEAD = re.compile(
    r"deeplpfnet\.(cubic|graduated|elliptical)_filter\."
    r"(?:\1_layer([1357])\.conv|fc_\1)\.(weight|bias)"
)
_UNET = re.compile(
    r"backbonenet\.unet\.(dconv_down|dconv_up|up_conv1x1_|conv_last)(\d?)(\.conv[12])?\.(weight|bias)"
)
_SIGNATURE = (
    "backbonenet.final_conv.weight",
    "backbonenet.unet.conv_last.conv1.weight",
    "deeplpfnet.cubic_filter.fc_cubic.weight",
    "deeplpfnet.graduated_filter.fc_graduated.weight",
    "deeplpfnet.elliptical_filter.fc_elliptical.weight",
)


def _double_conv(conv: str) -> str:
    """``.conv1`` / ``.conv2`` of the release's ``LocalNet`` -> index in diffsr's DoubleConv."""
    return ".0" if conv == ".conv1" else ".2"


def _rename_unet(match: re.Match[str], levels: int) -> str | None:
    """diffsr key of a U-Net key; ``levels``: encoder levels (``dconv_down`` count - 1)."""
    kind, number, conv, param = match.groups()
    if kind == "conv_last" and not number and conv:
        return f"backbone.image_head{_double_conv(conv)}.{param}"
    if not number or (kind == "up_conv1x1_") == bool(conv):
        return None
    n = int(number)
    if kind == "dconv_down" and n <= levels:
        return f"backbone.encoder.{n - 1}{_double_conv(conv)}.{param}"
    if kind == "dconv_down" and n == levels + 1:
        return f"backbone.bottleneck{_double_conv(conv)}.{param}"
    if kind == "dconv_up" and 1 <= n <= levels:
        return f"backbone.decoder.{levels - n}{_double_conv(conv)}.{param}"
    if kind == "up_conv1x1_" and 1 <= n <= levels:
        return f"backbone.up_convs.{n - 1}.{param}"
    return None


def _levels(state: Mapping[str, torch.Tensor]) -> int:
    downs = {k.split(".")[2] for k in state if k.startswith("backbonenet.unet.dconv_down")}
    return len(downs) - 1


def _rename(key: str, levels: int) -> str | None:
    """diffsr key of a used key of the release; None for any other key."""
    if key.startswith("backbonenet.final_conv."):
        return "backbone.output_conv." + key.removeprefix("backbonenet.final_conv.")
    head = _HEAD.fullmatch(key)
    if head:
        kind, layer, param = head.groups()
        module = f"body.{3 * (int(layer) - 1) // 2}" if layer else "fc"
        return f"{kind}_head.{module}.{param}"
    unet = _UNET.fullmatch(key)
    return _rename_unet(unet, levels) if unet else None


def matches_deeplpf(state: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state`` has the release's keys and nothing else."""
    if not all(key in state for key in _SIGNATURE):
        return False
    levels = _levels(state)
    return levels >= 1 and all(
        _UNUSED.fullmatch(key) or _rename(key, levels) is not None for key in state
    )


def convert_deeplpf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's state dict in :class:`diffsr.archs.deeplpf_arch.DeepLPF`'s keys (the
    never-used ``unet.conv1``-``conv3`` and ``unet.local_net`` dropped)."""
    used = {key: value for key, value in state.items() if not _UNUSED.fullmatch(key)}
    return rename_keys(used, partial(_rename, levels=_levels(state)))


DEEPLPF_LAYOUT = register_layout(
    OfficialLayout(
        name="DeepLPF",
        arch_types=("DeepLPF", "DeepLPFNet"),
        repository="sjmoran/DeepLPF",
        matches=matches_deeplpf,
        convert=convert_deeplpf,
    )
)
