"""A frozen pretrained diffusion UNet used as a loss network (DiffLoss).

``DiffusionPrior`` wraps the UNet and its noise schedule: always in eval mode, all weights
frozen, gradients flowing to the input only. ``get_shared_prior`` lets several loss blocks with
the same options share one instance per process and device.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
from typing import Any

import torch
from torch import nn

from ..utils.registry import check_kwargs
from .float32_precision import with_precision
from .grad_scaling import GradScaling, scaled_backward
from .presets import get_preset
from .schedule import NOISE_SCHEDULES, DiffusionSchedule
from .unet import UNetConfig, UNetModel, reinit_zero_layers
from .unet_blocks import float32_region
from .weights import load_unet_weights

__all__ = [
    "DiffusionPrior",
    "build_prior",
    "clear_shared_priors",
    "default_channels_last",
    "get_shared_prior",
    "release_shared_prior",
]

logger = logging.getLogger(__name__)

COMPUTE_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
RANDOM_INIT_SEED = 0


class DiffusionPrior(nn.Module):
    """Frozen ADM UNet + Gaussian diffusion schedule.

    Args:
        preset: a name from ``diffsr.diffusion.PRESETS`` (e.g. ``adm_256_uncond``).
        unet: ``create_unet`` keywords; with a preset they override the preset's.
        checkpoint: path of the weights (see :mod:`diffsr.diffusion.weights`). ``None`` gives
            random weights (tests, demos only; a warning is logged).
        dtype: compute dtype of the UNet: ``float32``, ``bfloat16`` or ``float16``. With a
            reduced dtype the torso's convolution weights are STORED in it (OpenAI's
            ``convert_to_fp16`` recipe: the input, middle and output blocks' convolutions),
            and the UNet runs without autocast; group norms, the timestep embedding MLPs, the
            attention softmax, the final output layer and the schedule stay in float32, and
            outputs are float32.
        channels_last: run convolutions in channels-last memory format (DiffLoss picks the
            default per device: :func:`default_channels_last`).
        checkpointing: recompute block activations in backward instead of storing them
            (non-reentrant ``torch.utils.checkpoint``). ``true`` = every block; an int n = the
            blocks of the n finest resolution levels only (see docs/prior.md for the trade-off).
        attention: ``sdpa`` (fused ``F.scaled_dot_product_attention``) or ``legacy`` (upstream
            math); same function.
        noise_schedule: ``linear`` or ``cosine``; default: the preset's, else ``linear``.
        diffusion_steps: number of timesteps T.
        fp16_grad_scaling: with ``dtype: float16``, scale the gradient on its way through the
            UNet by a power of two so that it does not underflow (see
            :mod:`diffsr.diffusion.grad_scaling`); no effect with other dtypes.
        allow_tf32: let CUDA matmuls and cuDNN convolutions of the float32 parts use TF32.
            ``False`` (default) runs them in exact IEEE float32 whatever the global flags say,
            forward and backward (:mod:`diffsr.diffusion.float32_precision`).
    """

    def __init__(
        self,
        preset: str | None = None,
        unet: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        dtype: str = "float32",
        channels_last: bool = False,
        checkpointing: bool | int = False,
        attention: str = "sdpa",
        noise_schedule: str | None = None,
        diffusion_steps: int = 1000,
        fp16_grad_scaling: bool = True,
        allow_tf32: bool = False,
    ) -> None:
        super().__init__()
        if preset is None and not unet:
            raise ValueError(
                "Diffusion prior options need 'preset' (e.g. adm_256_uncond) or 'unet'."
            )
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"Prior dtype {dtype!r} unknown; use float32, bfloat16 or float16.")
        if attention not in ("sdpa", "legacy"):
            raise ValueError(f"Prior attention {attention!r} unknown; use 'sdpa' or 'legacy'.")
        preset_info = get_preset(preset) if preset is not None else None
        noise_schedule = noise_schedule or (preset_info.noise_schedule if preset_info else "linear")
        if noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(
                f"Prior noise_schedule {noise_schedule!r} unknown; use linear or cosine."
            )

        self.preset = preset
        self.checkpoint_path = checkpoint
        self.compute_dtype = COMPUTE_DTYPES[dtype]
        self.channels_last = channels_last
        self.allow_tf32 = bool(allow_tf32)
        use_scaling = fp16_grad_scaling and self.compute_dtype == torch.float16
        self.grad_scaling = GradScaling() if use_scaling else None
        unet_options = {**(preset_info.unet if preset_info else {}), **(unet or {})}
        config = UNetConfig.from_options(unet_options, "diffusion prior 'unet'")
        if config.use_fp16:
            raise ValueError(
                "Diffusion prior 'unet': use_fp16 is guided-diffusion's flag; set the prior's "
                "'dtype: float16' instead (it stores the same layers in float16)."
            )

        if checkpoint is None:
            logger.warning(
                "Diffusion prior without a checkpoint: its weights are RANDOM (seed %d). Use this "
                "only for tests and demos; set 'checkpoint:' for real training.",
                RANDOM_INIT_SEED,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                self.unet = reinit_zero_layers(UNetModel(config, attention=attention))
        else:
            # Built on the meta device: no memory and no random init for weights about to be
            # replaced; loading assigns the checkpoint's tensors.
            with torch.device("meta"):
                self.unet = UNetModel(config, attention=attention)
            load_unet_weights(self.unet, checkpoint, preset_info)

        self.unet.enable_checkpointing(_checkpoint_levels(checkpointing, self.unet.num_levels))
        if self.compute_dtype != torch.float32:
            self.unet.set_torso_dtype(self.compute_dtype)  # halves weight memory, no recasts
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.unet.requires_grad_(False)
        self.schedule = DiffusionSchedule(noise_schedule, diffusion_steps)
        super().train(False)

    @property
    def autocast_dtype(self) -> torch.dtype:
        """Former name of :attr:`compute_dtype`."""
        return self.compute_dtype

    # --- facts DiffLoss needs -------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def image_size(self) -> int:
        """Training resolution of the prior (inputs of other sizes work if divisible)."""
        return self.unet.image_size

    @property
    def downsample_factor(self) -> int:
        """Input height and width must be multiples of this (2 ** (levels - 1))."""
        return self.unet.downsample_factor

    @property
    def learn_sigma(self) -> bool:
        return self.unet.learn_sigma

    @property
    def h_channels(self) -> int:
        """Channels of h (the middle block's output)."""
        return self.unet.middle_channels

    def train(self, mode: bool = True) -> DiffusionPrior:
        """A frozen prior stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    # --- diffusion process ----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward diffusion x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0 in [-1, 1]."""
        return self.schedule.q_sample(x0, t, noise)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0_hat from x_t and predicted noise eps."""
        return self.schedule.predict_x0(x_t, t, eps)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0)."""
        return self.schedule.posterior_mean(x0, x_t, t)

    # --- the network ----------------------------------------------------------------------
    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        need_eps: bool = True,
        need_h: bool = False,
        y: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Run the frozen UNet on noisy images.

        Args:
            x_t: (B, 3, H, W) noisy images (x in [-1, 1] diffused by ``q_sample``); H, W
                multiples of ``downsample_factor``.
            t: (B,) integer timesteps in [0, num_timesteps).
            need_eps: compute the predicted noise (full UNet). If False, stop after the middle
                block (about a quarter of the compute at 256x256).
            need_h: return h, the middle block's output.
            y: (B,) class labels, only for class-conditional presets.
        Returns:
            ``(eps, h)``: eps (B, 3, H, W) float32 or None; h (B, h_channels, H / f, W / f)
            float32 or None, with f = ``downsample_factor``.
        """
        if not (need_eps or need_h):
            raise ValueError("DiffusionPrior.forward: ask for eps, h or both.")
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        out_dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32

        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if need_eps:
                out, h = self.unet(x, t, y=y, return_h=True)
                return out[:, :3].to(out_dtype), h.to(out_dtype)
            return (self.unet(x, t, y=y, h_only=True).to(out_dtype),)

        scale_grads = (
            self.grad_scaling is not None and torch.is_grad_enabled() and x_t.requires_grad
        )

        def run_scaled(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return scaled_backward(run, x, self.grad_scaling) if scale_grads else run(x)

        # The weights are already in the compute dtype: autocast (a trainer's AMP included)
        # would only recast them at every call.
        with float32_region(x_t.device):
            outputs = with_precision(run_scaled, x_t, self.allow_tf32)
        if not need_eps:
            return None, outputs[0]
        return outputs[0], (outputs[1] if need_h else None)

    def extra_repr(self) -> str:
        return (
            f"preset={self.preset!r}, checkpoint={self.checkpoint_path!r}, "
            f"dtype={self.compute_dtype}, channels_last={self.channels_last}, "
            f"allow_tf32={self.allow_tf32}, "
            f"grad_scaling={self.grad_scaling is not None}, "
            f"checkpoint_levels={self.unet.checkpoint_levels}, T={self.num_timesteps}, "
            f"schedule={self.schedule.noise_schedule!r}"
        )


def _checkpoint_levels(checkpointing: bool | int, num_levels: int) -> int:
    if isinstance(checkpointing, bool):
        return num_levels if checkpointing else 0
    if isinstance(checkpointing, int) and checkpointing >= 0:
        return checkpointing
    raise ValueError(
        f"Prior checkpointing must be true/false or a level count >= 0; got {checkpointing!r}."
    )


def default_channels_last(device: torch.device | str | None) -> bool:
    """DiffLoss's default prior layout on ``device``: channels-last on the CPU (13% faster per
    DiffLoss step, docs/performance.md), contiguous elsewhere. On CUDA every GroupNorm of the
    UNet converts a channels-last input to the contiguous layout and back, so it stays off
    there until measured (``scripts/gpu_check.sh`` measures both layouts)."""
    return torch.device(device if device is not None else "cpu").type == "cpu"


def build_prior(opt: dict[str, Any], device: torch.device | str | None = None) -> DiffusionPrior:
    """Build a prior from its option dict (the keys of :class:`DiffusionPrior`), on ``device``."""
    check_kwargs(DiffusionPrior, opt, "diffusion prior")
    prior = DiffusionPrior(**opt)
    return prior.to(device) if device is not None else prior


_SHARED: dict[str, DiffusionPrior] = {}
_SHARED_LOCK = threading.Lock()


def canonical_key(opt: dict[str, Any], device: torch.device | str | None) -> str:
    """JSON of the options with defaults filled in and paths made absolute, plus the device."""
    check_kwargs(DiffusionPrior, opt, "diffusion prior")
    defaults = {
        name: p.default
        for name, p in inspect.signature(DiffusionPrior.__init__).parameters.items()
        if name != "self"
    }
    full = {**defaults, **opt}
    if full["checkpoint"] is not None:
        full["checkpoint"] = os.path.abspath(os.fspath(full["checkpoint"]))
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return json.dumps({"options": full, "device": str(dev)}, sort_keys=True, default=str)


def get_shared_prior(
    opt: dict[str, Any], device: torch.device | str | None = None
) -> DiffusionPrior:
    """The process-wide prior for these options and device, built on first use.

    Loss blocks with identical prior options get the same object (one copy of the weights).
    """
    key = canonical_key(opt, device)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = build_prior(opt, device)
        return _SHARED[key]


def release_shared_prior(opt: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Forget the shared prior of these options on ``device`` (freed once unreferenced)."""
    key = canonical_key(opt, device)
    with _SHARED_LOCK:
        _SHARED.pop(key, None)


def clear_shared_priors() -> None:
    """Forget all shared priors (they are freed once nothing else references them)."""
    with _SHARED_LOCK:
        _SHARED.clear()
