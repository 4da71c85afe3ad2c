"""Reading diffusion-prior checkpoints, with errors that say what is wrong and how to fix it.

Accepted files (``torch.load``-able, loaded with ``weights_only=True`` on the CPU):

- a raw UNet state dict, as OpenAI publishes (e.g. ``256x256_diffusion_uncond.pt``; float16 or
  float32 tensors);
- a dict wrapping one under ``params_ema``, ``ema``, ``params``, ``state_dict`` or ``model``
  (first present wins, in that order; BasicSR-style training checkpoints);
- keys may carry a common ``module.``, ``unet.`` or ``model.`` prefix (DDP, ``DiffusionPrior``).

Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .presets import GUIDED_DIFFUSION_README, PRESETS, Preset
from .unet import create_unet

__all__ = [
    "PRETRAINED_DIR",
    "WRAPPER_KEYS",
    "CheckpointMismatchError",
    "load_unet_weights",
    "matching_presets",
    "read_state_dict",
    "state_dict_layout",
]

PRETRAINED_DIR = "experiments/pretrained_models"
WRAPPER_KEYS = ("params_ema", "ema", "params", "state_dict", "model")
KEY_PREFIXES = ("module.", "unet.", "model.")
Layout = dict[str, tuple[int, ...]]


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the configured UNet."""


def missing_file_message(path: str | Path, preset: Preset | None) -> str:
    if preset is None:
        return (
            f"Diffusion prior checkpoint {str(path)!r} does not exist. Give 'checkpoint:' the path "
            f"of a state dict for the configured UNet (e.g. one written by diffsr's prior training "
            f"script), or use a preset with OpenAI's released weights. diffsr never downloads "
            f"weights."
        )
    return (
        f"Diffusion prior checkpoint {str(path)!r} does not exist. The preset {preset.name!r} "
        f"({preset.description}) needs OpenAI's file {preset.checkpoint_file}, published in the "
        f"guided-diffusion README ({GUIDED_DIFFUSION_README}; direct link {preset.url}). Download "
        f"it yourself and put it at {PRETRAINED_DIR}/{preset.checkpoint_file} (or set "
        f"'checkpoint:' to where it is). diffsr never downloads weights."
    )


def read_state_dict(path: str | Path, preset: Preset | None = None) -> dict[str, torch.Tensor]:
    """Load ``path`` and return the UNet state dict inside it (tensors as stored, on the CPU).

    ``preset`` only improves the message when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_file_message(path, preset))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"Cannot read diffusion prior checkpoint {str(path)!r} with torch.load "
            f"(weights_only=True): {err}. Expected a file saved with torch.save holding a state "
            f"dict (see diffsr.diffusion.weights for accepted layouts)."
        ) from err
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Find the tensor dict in ``obj`` (see module docstring) and strip a common key prefix."""
    for _ in range(3):  # wrappers may be nested, e.g. {'state_dict': {'params_ema': ...}}
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return strip_common_prefix(dict(obj))
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    shown = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"{source}: no UNet state dict found (top level: {shown}). Expected a dict of tensors, or "
        f"one under one of the keys {', '.join(WRAPPER_KEYS)}."
    )


def strip_common_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in KEY_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def state_dict_layout(state: nn.Module | Mapping[str, torch.Tensor]) -> Layout:
    """Key -> shape of a module's state dict or of a state dict."""
    items = state.state_dict() if isinstance(state, nn.Module) else state
    return {key: tuple(value.shape) for key, value in items.items()}


@functools.cache
def preset_layout(name: str) -> Layout:
    """Key -> shape of a preset's UNet, built on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        return state_dict_layout(create_unet(preset=name))


def matching_presets(layout: Layout) -> list[tuple[str, float]]:
    """Presets ranked by how much of ``layout`` they share: (name, fraction of equal key+shape
    pairs over the union of keys), best first; 1.0 means an exact layout match."""
    pairs = set(layout.items())
    scores = []
    for name in PRESETS:
        expected = set(preset_layout(name).items())
        union = len(pairs | expected)
        scores.append((name, len(pairs & expected) / union if union else 0.0))
    return sorted(scores, key=lambda item: -item[1])


def describe_mismatch(expected: Layout, found: Layout, limit: int = 8) -> str:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong_shape = [
        f"{k}: file {found[k]} vs model {expected[k]}"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", wrong_shape),
    ):
        if items:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def suggest_preset(found: Layout) -> str:
    ranked = matching_presets(found)
    exact = [name for name, score in ranked if score == 1.0]
    if exact:
        return f"The file matches the preset(s) {', '.join(exact)}: set 'preset:' accordingly."
    name, score = ranked[0]
    if score >= 0.5:
        return f"No preset matches exactly; the closest is {name!r} ({score:.0%} of keys/shapes agree)."
    return (
        f"It matches no preset (closest: {name!r}, {score:.0%}). If it is a UNet of your own, "
        f"give its create_unet keywords under 'unet:' instead of 'preset:'."
    )


def load_unet_weights(model: nn.Module, path: str | Path, preset: Preset | None = None) -> None:
    """Load ``path`` into ``model`` strictly, casting tensors to the model's dtypes (so float16
    checkpoints load into a float32 model). Raises FileNotFoundError with download instructions
    or CheckpointMismatchError naming keys and the preset the file fits.

    ``model`` may live on the meta device; its parameters then become the loaded CPU tensors.
    """
    state_dict = read_state_dict(path, preset)
    expected, found = state_dict_layout(model), state_dict_layout(state_dict)
    if expected != found:
        raise CheckpointMismatchError(
            f"Diffusion prior checkpoint {str(path)!r} does not fit the configured UNet"
            f"{f' (preset {preset.name!r})' if preset else ''}: {describe_mismatch(expected, found)}. "
            f"{suggest_preset(found)}"
        )
    own = model.state_dict()
    converted = {key: value.to(own[key].dtype) for key, value in state_dict.items()}
    on_meta = any(value.is_meta for value in own.values())
    model.load_state_dict(converted, strict=True, assign=on_meta)
