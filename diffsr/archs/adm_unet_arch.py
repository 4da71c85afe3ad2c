"""OpenAI's ADM UNet as a registered architecture (for training a prior with the trainer)."""

from __future__ import annotations

from typing import Any

from diffsr.diffusion import UNetModel, create_unet
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["ADMUNet"]


@ARCH_REGISTRY.register(name="ADMUNet")
def ADMUNet(preset: str | None = None, attention: str = "sdpa", **options: Any) -> UNetModel:
    """``create_unet`` keywords (guided-diffusion's ``create_model`` names) or a preset.

    Input: noisy images B x 3 x H x W in [-1, 1] and timesteps (B,); output B x 3 x H x W
    (B x 6 with ``learn_sigma``). See docs/prior.md for the keywords and presets.
    """
    return create_unet(preset=preset, attention=attention, **options)
