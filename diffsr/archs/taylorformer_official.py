"""The released MB-TaylorFormer checkpoints (FVL2020/ICCV-2023-MB-TaylorFormer), B and L.

The authors' BasicSR fork saves ``{'params': state_dict}``; their ``MB_TaylorFormer`` class names
its modules ``patch_embed_encoder_level1.patch_embeds.<path>.patch_conv.*`` (the deformable
embedding chain of a level), ``encoder_level1.mhca_blks.<path>.MHCA_layers.<block>.*`` (the
branches' Transformer blocks) and ``encoder_level1.aggregate.*`` (SKFF), and likewise for
``encoder_level2/3``, ``latent``, ``decoder_level3/2/1`` and ``refinement``. The two variants
differ in depth (B: blocks 2/3/3/4, 2 paths per level; L: blocks 4/6/6/8, paths 2/3/3/3), so a
file is recognised as exactly one of them by its keys and shapes.
"""

from __future__ import annotations

import torch

from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.archs.official_keys import from_authors, rename_by_rules, to_authors
from diffsr.archs.official_rename import matches_network
from diffsr.archs.taylorformer_arch import MBTaylorFormer

__all__ = ["LAYOUTS", "from_official", "official_key", "to_official"]

REPOSITORY = "FVL2020/ICCV-2023-MB-TaylorFormer"
ARCH_TYPES = ("MBTaylorFormer", "MB_TaylorFormer")

# diffsr stage -> the authors' stage (its embedding chain is "patch_embed_" + that name).
STAGES = {
    "encoder1": "encoder_level1",
    "encoder2": "encoder_level2",
    "encoder3": "encoder_level3",
    "bottleneck": "latent",
    "decoder3": "decoder_level3",
    "decoder2": "decoder_level2",
    "decoder1": "decoder_level1",
    "refinement": "refinement",
}
_EMBED = r"patch_embed_{0}.patch_embeds.\2.patch_conv"
_BLOCK = r"{0}.mhca_blks.\2.MHCA_layers.\3"


def _rules() -> list[tuple[str, str]]:
    rules = [
        (r"embed\.weight", r"patch_embed.proj.weight"),
        (r"reduce([23])\.(weight|bias)", r"reduce_chan_level\1.0.\2"),
        (r"skip\.(weight|bias)", r"skip_conv.\1"),
        (r"output\.weight", r"output.0.weight"),
    ]
    for ours, theirs in STAGES.items():
        embed, block = _EMBED.format(theirs), _BLOCK.format(theirs)
        rules += [
            (rf"({ours})\.embeds\.(\d+)\.offset_net\.(\d)\.weight", embed + r".offset_generator.\3.weight"),
            (rf"({ours})\.embeds\.(\d+)\.dwconv\.weight", embed + r".dcn.weight"),
            (rf"({ours})\.embeds\.(\d+)\.pwconv\.weight", embed + r".pwconv.weight"),
            (rf"({ours})\.branches\.(\d+)\.(\d+)\.norm([12])\.weight", block + r".norm\4.body.weight"),
            (rf"({ours})\.branches\.(\d+)\.(\d+)\.attn\.gate\.convs\.(.+)", block + r".attn.refine_att.conv_list.\4"),
            (rf"({ours})\.branches\.(\d+)\.(\d+)\.(attn|ffn)\.(.+)", block + r".\4.\5"),
            (rf"({ours})\.fusion\.squeeze\.(.+)", theirs + r".aggregate.conv_du.\2"),
            (rf"({ours})\.fusion\.excite\.(.+)", theirs + r".aggregate.fcs.\2"),
        ]  # fmt: skip
    return rules


RULES = _rules()
# The authors name the resizers by the levels they join: down1_2, down2_3, down3_4, up4_3, ...
_RESIZERS = {"down1": "down1_2", "down2": "down2_3", "down3": "down3_4"}
_RESIZERS |= {"up3": "up4_3", "up2": "up3_2", "up1": "up2_1"}


def official_key(key: str) -> str:
    """diffsr's MBTaylorFormer key -> the authors' key."""
    head, _, rest = key.partition(".")
    if head in _RESIZERS:
        return f"{_RESIZERS[head]}.body.{rest}"
    return rename_by_rules(key, RULES)


def _variant_b() -> MBTaylorFormer:
    return MBTaylorFormer(variant="B")


def _variant_l() -> MBTaylorFormer:
    return MBTaylorFormer(variant="L")


FACTORIES = {"B": _variant_b, "L": _variant_l}


def from_official(state: StateDict, variant: str) -> dict[str, torch.Tensor]:
    """A released MB-TaylorFormer-``variant`` state dict under diffsr's keys."""
    return from_authors(state, FACTORIES[variant], official_key)


def to_official(state: StateDict) -> dict[str, torch.Tensor]:
    """diffsr's MBTaylorFormer state dict under the authors' keys."""
    return to_authors(state, official_key)


def _convert(variant: str):
    def convert(state: StateDict) -> dict[str, torch.Tensor]:
        return from_official(state, variant)

    return convert


def _matches(variant: str):
    convert = _convert(variant)

    def matches(state: StateDict) -> bool:
        # Cheap rejection before the network's shapes are first computed.
        if "patch_embed_encoder_level1.patch_embeds.0.patch_conv.dcn.weight" not in state:
            return False
        return matches_network(state, convert, FACTORIES[variant])

    return matches


LAYOUTS = {
    variant: register_layout(
        OfficialLayout(
            name=f"MB-TaylorFormer-{variant}",
            arch_types=ARCH_TYPES,
            repository=REPOSITORY,
            matches=_matches(variant),
            convert=_convert(variant),
            arch_kwargs={"variant": variant},
        )
    )
    for variant in FACTORIES
}
