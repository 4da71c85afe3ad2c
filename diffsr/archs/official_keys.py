"""Released layouts described by renaming rules, written once from diffsr's keys to the authors'.

Where the authors' names follow from diffsr's by a table of rules, the table is written in the
diffsr -> authors direction and inverted over diffsr's own network (built with the release's
arguments), so one table both reads a released file (:func:`from_authors`, through
:func:`diffsr.archs.official_rename.rename_keys`, which refuses unknown keys) and writes one
(:func:`to_authors`, for round trips).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache

import torch
from torch import nn

from diffsr.archs.official_rename import network_shapes, rename_keys

__all__ = ["diffsr_names", "from_authors", "rename_by_rules", "to_authors"]

Rules = Sequence[tuple[str, str]]


def rename_by_rules(key: str, rules: Rules) -> str:
    """``key`` rewritten by the first ``(pattern, replacement)`` whose pattern fully matches it.

    Raises:
        KeyError: no rule matches (the rules do not cover the network: a bug, not a user error).
    """
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match is not None:
            return match.expand(replacement)
    raise KeyError(f"no official name rule covers the diffsr key {key!r}")


@cache
def diffsr_names(
    factory: Callable[[], nn.Module], authors_key: Callable[[str], str]
) -> dict[str, str]:
    """The authors' key -> diffsr's key, for every entry of ``factory()``'s state dict."""
    names: dict[str, str] = {}
    for key in network_shapes(factory):
        name = authors_key(key)
        if name in names:
            raise RuntimeError(f"official names: {names[name]!r} and {key!r} both map to {name!r}")
        names[name] = key
    return names


def from_authors(
    state: Mapping[str, torch.Tensor],
    factory: Callable[[], nn.Module],
    authors_key: Callable[[str], str],
) -> dict[str, torch.Tensor]:
    """A released state dict under diffsr's keys (KeyError for a key the release lacks)."""
    return rename_keys(state, diffsr_names(factory, authors_key).get)


def to_authors(
    state: Mapping[str, torch.Tensor], authors_key: Callable[[str], str]
) -> dict[str, torch.Tensor]:
    """diffsr's state dict under the authors' keys."""
    return {authors_key(key): value for key, value in state.items()}
