"""From an opened checkpoint to a state dict that fits diffsr's network.

Two steps behind :func:`diffsr.models.checkpoint.load_network`:

- :func:`bare_state_dict` takes the state dict out of a container (diffsr's and BasicSR's
  ``{'params', 'params_ema'}``, the authors' ``{'state_dict': ...}``, ``{'model': ...}``, or a
  bare state dict) and removes DataParallel's ``module.`` prefixes;
- :func:`convert_official` recognises one of the paper networks' released layouts
  (:mod:`diffsr.archs.official`), checks that it is a layout of the network the options build,
  and renames it into that network's keys; otherwise it explains what the file is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffsr.archs.official import OfficialLayout, find_layouts

__all__ = [
    "CheckpointMismatchError",
    "bare_state_dict",
    "convert_official",
    "fits",
    "official_layout_of",
    "registry_names",
]

logger = logging.getLogger("diffsr")

AUTHORS_CONTAINER_KEYS = ("state_dict", "model")  # AOD-Net, FFA-Net (and many others)
DOCS = "docs/pretrained.md"


class CheckpointMismatchError(ValueError):
    """The file is not a checkpoint of the network that the options build."""


def bare_state_dict(content: Any, param_key: str, path: Path) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` dict inside ``content``, without ``module.`` prefixes.

    ``param_key`` (``params`` or ``params_ema``) is taken when present, ``params`` otherwise
    (with a warning); ``auto`` takes ``params_ema`` when present, else ``params``. Then the
    authors' ``state_dict`` / ``model`` entries; else ``content`` itself when it holds tensors.
    """
    if not isinstance(content, Mapping):
        raise CheckpointMismatchError(
            f"{path} holds a {type(content).__name__}, not a state dict or a dict containing one."
        )
    if param_key == "auto":
        param_key = "params_ema" if "params_ema" in content else "params"
    if param_key in content:
        content = content[param_key]
    elif "params" in content:
        logger.warning("%s has no %r; loading 'params' instead.", path, param_key)
        content = content["params"]
    else:
        for key in AUTHORS_CONTAINER_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping):
        raise CheckpointMismatchError(f"{path}: the entry {param_key!r} is not a state dict.")
    state = {
        str(k).removeprefix("module."): v for k, v in content.items() if isinstance(v, torch.Tensor)
    }
    if not state:
        raise CheckpointMismatchError(
            f"{path} holds no tensors under {param_key!r}, 'params', 'state_dict' or 'model' "
            f"(top-level keys: {sorted(map(str, content))[:8]}); see {DOCS}."
        )
    return state


def fits(net: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """True when ``state`` has exactly ``net``'s keys, each with the same shape."""
    own = net.state_dict()
    return set(own) == set(state) and all(own[k].shape == state[k].shape for k in own)


def registry_names(net: nn.Module) -> set[str]:
    """The names under which ``net``'s class is registered (class name and aliases)."""
    from diffsr.utils.registry import ARCH_REGISTRY

    cls = type(net)
    return {cls.__name__} | {name for name in ARCH_REGISTRY if ARCH_REGISTRY.get(name) is cls}


def official_layout_of(net: nn.Module, state: Mapping[str, torch.Tensor]) -> OfficialLayout | None:
    """The released layout of ``net``'s network that ``state`` is in, if any."""
    names = registry_names(net)
    own = [layout for layout in find_layouts(state) if names & set(layout.arch_types)]
    return own[0] if own else None


def convert_official(
    net: nn.Module, state: Mapping[str, torch.Tensor], path: Path
) -> tuple[dict[str, torch.Tensor], OfficialLayout]:
    """``state`` (a released layout of ``net``'s network) renamed into ``net``'s keys.

    Raises :class:`CheckpointMismatchError` naming the file, the network the options build and
    what the file looks like: another network's or variant's release, or no known layout.
    """
    layouts = find_layouts(state)
    names = registry_names(net)
    wanted = type(net).__name__
    own = [layout for layout in layouts if names & set(layout.arch_types)]
    for layout in own:
        converted = layout.convert(state)
        if fits(net, converted):
            return converted, layout
    if own:  # this network's release, another variant / constructor arguments
        layout = own[0]
        raise CheckpointMismatchError(
            f"{path} is the official {layout.name} checkpoint ({layout.repository}), but "
            f"network_g builds a {wanted} of another variant{_asked(net, layout, state)}: set "
            f"network_g to {_network_g(layout, state)}."
        )
    if layouts:
        layout = layouts[0]
        raise CheckpointMismatchError(
            f"{path} is the official {layout.name} checkpoint ({layout.repository}), but "
            f"network_g builds {wanted}: this file needs network_g {_network_g(layout, state)}."
        )
    raise CheckpointMismatchError(_no_layout_message(net, state, path))


def _network_g(layout: OfficialLayout, state: Mapping[str, torch.Tensor]) -> str:
    kwargs = {"type": layout.arch_types[0], **layout.network_g_kwargs(state)}
    return "{" + ", ".join(f"{k}: {v}" for k, v in kwargs.items()) + "}"


def _asked(net: nn.Module, layout: OfficialLayout, state: Mapping[str, torch.Tensor]) -> str:
    """``" (network_g asks for variant B)"`` from the attributes the network stores, where it does."""
    needed = layout.network_g_kwargs(state)
    asked = {
        key: getattr(net, key)
        for key in needed
        if hasattr(net, key) and getattr(net, key) != needed[key]
    }
    if not asked:
        return ""
    return " (network_g asks for " + ", ".join(f"{k} {v}" for k, v in asked.items()) + ")"


def _no_layout_message(net: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> str:
    own = net.state_dict()
    missing = [k for k in own if k not in state][:5]
    unexpected = [k for k in state if k not in own][:5]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and own[k].shape != state[k].shape
    ][:3]
    details = f"missing keys {missing}, unexpected keys {unexpected}"
    if wrong_shape:
        details += f", shapes (file vs network) {wrong_shape}"
    return (
        f"{path} does not fit {type(net).__name__} and is not a released layout diffsr knows "
        f"({details}). Check that the file is one of the checkpoints listed in {DOCS} for this "
        f"network and that network_g matches it."
    )
