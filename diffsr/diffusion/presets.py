"""OpenAI's released guided-diffusion checkpoints as named presets.

Flags come from the guided-diffusion README (https://github.com/openai/guided-diffusion).
``use_fp16`` is left False in every preset: upstream's flag means "convert the torso to
float16"; diffsr's prior uses autocast (its ``dtype`` option) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHECKPOINT_URL_BASE", "GUIDED_DIFFUSION_README", "PRESETS", "Preset", "get_preset"]

GUIDED_DIFFUSION_README = "https://github.com/openai/guided-diffusion#download-pre-trained-models"
CHECKPOINT_URL_BASE = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"


@dataclass(frozen=True)
class Preset:
    """A released checkpoint: UNet keywords for ``create_unet`` and its diffusion settings."""

    name: str
    description: str
    checkpoint_file: str
    unet: dict[str, Any] = field(default_factory=dict)
    noise_schedule: str = "linear"
    diffusion_steps: int = 1000

    @property
    def url(self) -> str:
        return CHECKPOINT_URL_BASE + self.checkpoint_file


# Shared by the 256x256 and 512x512 ImageNet models and the LSUN models.
_ADM_LARGE = {
    "num_channels": 256,
    "num_res_blocks": 2,
    "attention_resolutions": "32,16,8",
    "num_head_channels": 64,
    "learn_sigma": True,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
}


def _preset(name: str, description: str, checkpoint_file: str, **overrides: Any) -> Preset:
    schedule = overrides.pop("noise_schedule", "linear")
    return Preset(name, description, checkpoint_file, overrides, noise_schedule=schedule)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _preset(
            "adm_256_uncond",
            "ImageNet 256x256, unconditional; the DiffLoss paper's prior",
            "256x256_diffusion_uncond.pt",
            image_size=256,
            class_cond=False,
            **_ADM_LARGE,
        ),
        _preset(
            "adm_64_cond",
            "ImageNet 64x64, class-conditional",
            "64x64_diffusion.pt",
            image_size=64,
            class_cond=True,
            num_channels=192,
            num_res_blocks=3,
            attention_resolutions="32,16,8",
            num_head_channels=64,
            learn_sigma=True,
            resblock_updown=True,
            use_scale_shift_norm=True,
            use_new_attention_order=True,
            dropout=0.1,
            noise_schedule="cosine",
        ),
        _preset(
            "adm_128_cond",
            "ImageNet 128x128, class-conditional",
            "128x128_diffusion.pt",
            image_size=128,
            class_cond=True,
            num_channels=256,
            num_res_blocks=2,
            attention_resolutions="32,16,8",
            num_heads=4,
            learn_sigma=True,
            resblock_updown=True,
            use_scale_shift_norm=True,
        ),
        _preset(
            "adm_256_cond",
            "ImageNet 256x256, class-conditional",
            "256x256_diffusion.pt",
            image_size=256,
            class_cond=True,
            **_ADM_LARGE,
        ),
        _preset(
            "adm_512_cond",
            "ImageNet 512x512, class-conditional",
            "512x512_diffusion.pt",
            image_size=512,
            class_cond=True,
            **_ADM_LARGE,
        ),
        *(
            _preset(
                f"lsun_{scene}",
                f"LSUN {scene} 256x256, unconditional",
                f"lsun_{scene}.pt",
                image_size=256,
                class_cond=False,
                dropout=0.1,
                **_ADM_LARGE,
            )
            for scene in ("bedroom", "cat", "horse")
        ),
        _preset(
            "lsun_horse_nodropout",
            "LSUN horse 256x256, unconditional, trained without dropout",
            "lsun_horse_nodropout.pt",
            image_size=256,
            class_cond=False,
            **_ADM_LARGE,
        ),
    ]
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names raise a ValueError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown diffusion prior preset {name!r}. Known presets: {', '.join(PRESETS)}. "
            f"For another architecture give the UNet keywords under 'unet:' instead."
        ) from None
