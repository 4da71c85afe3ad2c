"""Helpers for released layouts that are diffsr's parameters under other names.

A layout module (``*_official.py``) writes one ``rename(key) -> new key | None`` function;
:func:`rename_keys` applies it to a whole state dict and :func:`matches_network` accepts a
state dict only when the renamed keys and shapes are exactly those of diffsr's network built
with the release's constructor arguments (so no other network's file can match).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import torch
from torch import nn

__all__ = ["authors_argument", "matches_network", "network_shapes", "rename_keys"]

StateDict = Mapping[str, torch.Tensor]


def rename_keys(state: StateDict, rename: Callable[[str], str | None]) -> dict[str, torch.Tensor]:
    """``{rename(k): v}``; KeyError naming the first key that ``rename`` does not know."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = rename(key)
        if new_key is None:
            raise KeyError(f"{key!r} is not a key of this released layout")
        if new_key in renamed:
            raise KeyError(f"{key!r} renames to {new_key!r}, which is already taken")
        renamed[new_key] = value
    return renamed


@cache
def network_shapes(factory: Callable[[], nn.Module]) -> dict[str, torch.Size]:
    """Keys and shapes of ``factory()``'s state dict (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = factory()
    return {key: value.shape for key, value in net.state_dict().items()}


def matches_network(
    state: StateDict,
    convert: Callable[[StateDict], dict[str, torch.Tensor]],
    factory: Callable[[], nn.Module],
) -> bool:
    """True when ``convert(state)`` has exactly the keys and shapes of ``factory()``."""
    try:
        converted = convert(state)
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, RuntimeError):
        return False
    expected = network_shapes(factory)
    return set(converted) == set(expected) and all(
        converted[key].shape == shape for key, shape in expected.items()
    )


def authors_argument(network: str, ours: tuple[str, Any, Any], theirs: tuple[str, Any]) -> Any:
    """Resolve a constructor argument that the authors' code names differently.

    ``ours`` is ``(name, value, default)``, ``theirs`` is ``(name, value or None)``: the
    authors' value wins when given; giving both with different values is an error.
    """
    our_name, our_value, default = ours
    their_name, their_value = theirs
    if their_value is None:
        return our_value
    if our_value != default and our_value != their_value:
        raise ValueError(
            f"{network}: {their_name}={their_value!r} (the authors' name) and "
            f"{our_name}={our_value!r} disagree; give only one of them."
        )
    return their_value
