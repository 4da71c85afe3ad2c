"""Registry of the paper networks' released checkpoint layouts (their authors' key names).

Each ``<network>_official.py`` beside the network's ``*_arch.py`` describes one or more released
layouts with :class:`OfficialLayout` and adds them with :func:`register_layout`. The loader
(:func:`diffsr.models.checkpoint.load_network`) uses them to recognise an authors' file and
convert it on the fly; ``scripts/convert_official.py`` writes the converted file once.

A layout works on a *bare* state dict (the container already opened, ``module.`` prefixes
already removed): ``matches`` says whether a state dict is in this layout, ``convert`` renames
(and, where needed, reshapes) its tensors into the keys of diffsr's network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["OFFICIAL_LAYOUTS", "OfficialLayout", "find_layouts", "register_layout"]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class OfficialLayout:
    """One released checkpoint layout of one network (or one variant of it).

    name: shown to users, e.g. ``"MB-TaylorFormer-L"``.
    arch_types: diffsr registry names whose networks this layout converts into
        (e.g. ``("MBTaylorFormer", "MB_TaylorFormer")``).
    repository: the authors' repository, e.g. ``"FVL2020/ICCV-2023-MB-TaylorFormer"``.
    matches: True when a bare state dict is in this layout (keys and, where variants differ,
        shapes); must be cheap and must not raise.
    convert: the bare state dict renamed into diffsr's keys for this network.
    arch_kwargs: the ``network_g`` keyword arguments of the variant this file holds, used in
        error messages (e.g. ``{"variant": "L"}``); empty when there is one variant.
    describe: for layouts whose size is read from the file (e.g. RCDNet's stage count), the
        ``network_g`` keyword arguments a given state dict needs; added to ``arch_kwargs`` in
        error messages.
    """

    name: str
    arch_types: tuple[str, ...]
    repository: str
    matches: Callable[[StateDict], bool]
    convert: Callable[[StateDict], dict[str, torch.Tensor]]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    describe: Callable[[StateDict], dict[str, Any]] | None = None

    def network_g_kwargs(self, state: StateDict) -> dict[str, Any]:
        """The ``network_g`` keyword arguments that load ``state`` (a file in this layout)."""
        return {**self.arch_kwargs, **(self.describe(state) if self.describe else {})}


OFFICIAL_LAYOUTS: list[OfficialLayout] = []


def register_layout(layout: OfficialLayout) -> OfficialLayout:
    """Add ``layout`` (names must be unique)."""
    if any(existing.name == layout.name for existing in OFFICIAL_LAYOUTS):
        raise ValueError(f"An official layout named {layout.name!r} is already registered.")
    OFFICIAL_LAYOUTS.append(layout)
    return layout


def find_layouts(state: StateDict) -> list[OfficialLayout]:
    """Every registered layout that ``state`` (a bare state dict) matches."""
    _import_layout_modules()
    return [layout for layout in OFFICIAL_LAYOUTS if layout.matches(state)]


def _import_layout_modules() -> None:
    from diffsr.utils.registry import import_modules_with_suffix

    import_modules_with_suffix("diffsr.archs", "_official")
