"""The frozen diffusion prior: OpenAI's ADM UNet (guided-diffusion layout), its noise schedule,
checkpoint loading, and the ``DiffusionPrior`` wrapper that DiffLoss uses as a loss network."""

from .presets import PRESETS, Preset, get_preset
from .prior import (
    DiffusionPrior,
    build_prior,
    clear_shared_priors,
    default_channels_last,
    get_shared_prior,
    release_shared_prior,
)
from .schedule import DiffusionSchedule, make_betas
from .unet import UNetConfig, UNetModel, create_unet, reinit_zero_layers
from .weights import CheckpointMismatchError, load_unet_weights, read_state_dict

__all__ = [
    "PRESETS",
    "CheckpointMismatchError",
    "DiffusionPrior",
    "DiffusionSchedule",
    "Preset",
    "UNetConfig",
    "UNetModel",
    "build_prior",
    "clear_shared_priors",
    "create_unet",
    "default_channels_last",
    "get_preset",
    "get_shared_prior",
    "load_unet_weights",
    "make_betas",
    "read_state_dict",
    "reinit_zero_layers",
    "release_shared_prior",
]
