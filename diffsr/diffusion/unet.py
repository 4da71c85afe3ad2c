"""The ADM UNet of OpenAI guided-diffusion, re-implemented with the same parameter names and the
same function, plus an early exit after the middle block ("h-space") for use as a loss network.

``create_unet`` takes guided-diffusion's ``create_model`` keywords (same meaning, same defaults)
or a preset name from :mod:`diffsr.diffusion.presets`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .presets import get_preset
from .unet_blocks import (
    AttentionBackend,
    AttentionBlock,
    Downsample,
    GroupNorm32,
    ResBlock,
    TimestepSequential,
    Upsample,
    float32_region,
    timestep_embedding,
    zero_initialised,
)

__all__ = ["NUM_CLASSES", "UNetConfig", "UNetModel", "create_unet", "reinit_zero_layers"]

NUM_CLASSES = 1000  # ImageNet labels of the class-conditional models

# guided-diffusion's channel multipliers when channel_mult is "" (keyed by image_size).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


@dataclass(frozen=True)
class UNetConfig:
    """guided-diffusion ``create_model`` keywords, with its defaults.

    ``channel_mult`` is ``""`` (chosen from ``image_size``), a string like ``"1,2,2,2"`` or a
    sequence of numbers. ``attention_resolutions`` lists feature-map sizes (not downsample rates)
    that get attention, as a string like ``"32,16,8"`` or a sequence of ints.
    """

    image_size: int
    num_channels: int
    num_res_blocks: int
    channel_mult: str | Sequence[float] = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: str | int | Sequence[int] = "16"
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str = "unet options") -> UNetConfig:
        """Build from a keyword dict, naming unknown or missing keys in the error."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ValueError(
                    f"{where}: unknown key {key!r}.{hint} Accepted: {', '.join(names)}."
                )
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in options]
        if missing:
            raise ValueError(f"{where}: missing required key(s) {', '.join(missing)}.")
        return cls(**options)

    @property
    def resolved_channel_mult(self) -> tuple[float, ...]:
        if isinstance(self.channel_mult, str):
            if self.channel_mult == "":
                if self.image_size not in DEFAULT_CHANNEL_MULT:
                    raise ValueError(
                        f"No default channel_mult for image_size {self.image_size} (defaults "
                        f"exist for {sorted(DEFAULT_CHANNEL_MULT)}); give channel_mult, "
                        f"e.g. '1,2,2,2'."
                    )
                return DEFAULT_CHANNEL_MULT[self.image_size]
            return tuple(int(m) for m in self.channel_mult.split(","))
        return tuple(self.channel_mult)

    @property
    def attention_downsample_rates(self) -> tuple[int, ...]:
        """Downsample factors (1 = full resolution) at which attention blocks are placed."""
        resolutions = self.attention_resolutions
        if isinstance(resolutions, int):  # YAML reads "attention_resolutions: 16" as a number
            resolutions = [resolutions]
        elif isinstance(resolutions, str):
            resolutions = [int(r) for r in resolutions.split(",") if r.strip()]
        return tuple(self.image_size // int(r) for r in resolutions)

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3


class UNetModel(nn.Module):
    """ADM UNet: ``(x_t, t[, y]) -> model output`` with optional h-space output.

    Args:
        config: the architecture (guided-diffusion ``create_model`` keywords).
        attention: ``"legacy"`` (reference math) or ``"sdpa"`` (fused, same function).
    """

    def __init__(self, config: UNetConfig, attention: AttentionBackend = "legacy") -> None:
        super().__init__()
        self.config = config
        channel_mult = config.resolved_channel_mult
        attention_rates = config.attention_downsample_rates
        model_channels = config.num_channels
        self.image_size = config.image_size
        self.in_channels = 3
        self.out_channels = config.out_channels
        self.model_channels = model_channels
        self.channel_mult = channel_mult
        self.num_classes = NUM_CLASSES if config.class_cond else None
        self.dtype = torch.float16 if config.use_fp16 else torch.float32
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        heads_up = (
            config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
        )
        emb_dim = 4 * model_channels

        def res_block(
            ch_in: int, ch_out: int | None = None, direction: str | None = None
        ) -> ResBlock:
            return ResBlock(
                ch_in,
                emb_dim,
                config.dropout,
                out_channels=ch_out,
                use_scale_shift_norm=config.use_scale_shift_norm,
                resample_direction=direction,
            )

        def attention_block(ch: int, num_heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch,
                num_heads=num_heads,
                num_head_channels=config.num_head_channels,
                use_new_attention_order=config.use_new_attention_order,
                backend=attention,
            )

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_dim)

        # Encoder. `levels` records each block's resolution level (0 = full size) for
        # activation checkpointing; `skip_channels` the width of each skip connection.
        ch = first_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(3, ch, 3, padding=1))])
        self.input_levels = [0]
        skip_channels = [ch]
        rate = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if rate in attention_rates:
                    layers.append(attention_block(ch, config.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                self.input_levels.append(level)
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, "down") if config.resblock_updown else Downsample(ch, True)
                self.input_blocks.append(TimestepSequential(down))
                self.input_levels.append(level)
                skip_channels.append(ch)
                rate *= 2

        self.middle_block = TimestepSequential(
            res_block(ch), attention_block(ch, config.num_heads), res_block(ch)
        )
        self.middle_level = len(channel_mult) - 1
        self.middle_channels = ch

        # Decoder: one more block per level than the encoder, each eating one skip connection.
        self.output_blocks = nn.ModuleList()
        self.output_levels: list[int] = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if rate in attention_rates:
                    layers.append(attention_block(ch, heads_up))
                block_level = level
                if level and i == config.num_res_blocks:
                    up = res_block(ch, ch, "up") if config.resblock_updown else Upsample(ch, True)
                    layers.append(up)
                    rate //= 2
                    block_level = level - 1  # its output is at the next finer level
                self.output_blocks.append(TimestepSequential(*layers))
                self.output_levels.append(block_level)

        self.out = nn.Sequential(
            GroupNorm32(ch),
            nn.SiLU(),
            zero_initialised(nn.Conv2d(first_ch, self.out_channels, 3, padding=1)),
        )
        self.checkpoint_levels = 0
        if config.use_checkpoint:
            self.enable_checkpointing(self.num_levels)

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 6

    @property
    def num_levels(self) -> int:
        """Number of resolution levels (``len(channel_mult)``)."""
        return len(self.channel_mult)

    def enable_checkpointing(self, levels: int) -> None:
        """Recompute, in backward, the blocks at the ``levels`` finest resolution levels.

        Uses non-reentrant ``torch.utils.checkpoint`` (works with frozen weights). ``levels=0``
        turns it off; ``num_levels`` covers every block (the middle block is on the coarsest
        level), like guided-diffusion's ``use_checkpoint``.
        """
        if levels < 0:
            raise ValueError(f"checkpoint levels must be >= 0, got {levels}.")
        self.checkpoint_levels = int(levels)

    def set_attention_backend(self, backend: AttentionBackend) -> None:
        """Switch every attention block to ``"legacy"`` or ``"sdpa"``."""
        for module in self.modules():
            if isinstance(module, AttentionBlock):
                module.backend = backend

    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16 (guided-diffusion's ``use_fp16`` recipe)."""
        self._cast_torso_convs(torch.float16)

    def set_torso_dtype(self, dtype: torch.dtype) -> None:
        """Store the torso's convolutions in ``dtype`` and run the torso in it.

        The recipe of guided-diffusion's ``convert_to_fp16``, for float16 or bfloat16: the 1x1
        and 3x3 convolutions of the input, middle and output blocks change dtype; the timestep
        embedding MLPs, the per-block embedding projections, the group norms and the output
        layer stay float32 (they run in float32 regions). The input is cast to ``dtype`` on
        entry; h and the output are returned in the input's dtype.
        """
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"Torso dtype {dtype} unsupported; use float32, float16 or bfloat16.")
        self._cast_torso_convs(dtype)
        self.dtype = dtype

    def convert_to_fp32(self) -> None:
        self._cast_torso_convs(torch.float32)

    def _cast_torso_convs(self, dtype: torch.dtype) -> None:
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for module in part.modules():
                if isinstance(module, nn.Conv1d | nn.Conv2d):
                    module.to(dtype)

    def _run(self, block: TimestepSequential, h: torch.Tensor, emb: torch.Tensor, level: int):
        if level < self.checkpoint_levels and torch.is_grad_enabled():
            # The RNG state matters to the recompute only when dropout is active: saving and
            # restoring it (CPU and every CUDA device) costs time for nothing in eval mode.
            random = self.training and self.config.dropout > 0
            return checkpoint(block, h, emb, use_reentrant=False, preserve_rng_state=random)
        return block(h, emb)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        return_h: bool = False,
        h_only: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply the UNet.

        Args:
            x: (B, 3, H, W) noisy images x_t in [-1, 1]-scale; H and W divisible by
                ``downsample_factor``.
            t: (B,) timesteps (integers, or floats for fractional steps).
            y: (B,) class labels, required exactly when the model is class-conditional.
            return_h: also return the middle block's output h.
            h_only: stop after the middle block and return only h (no decoder compute).
        Returns:
            (B, out_channels, H, W) output (eps, then the variance interpolation channels when
            learn_sigma); with ``return_h`` the pair ``(out, h)``; with ``h_only`` h, of shape
            (B, middle_channels, H / downsample_factor, W / downsample_factor).
        """
        self._check_inputs(x, t, y)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        with float32_region(x.device):
            embedding = timestep_embedding(t, self.model_channels)
            emb = self.time_embed(embedding.to(self.time_embed[0].weight.dtype))  # float64 tests
            if self.num_classes is not None:
                emb = emb + self.label_emb(y)

        reduced = self.dtype in (torch.float16, torch.bfloat16)
        h = x.to(self.dtype) if reduced else x  # reduced-precision torso, as upstream's fp16
        skips = []
        for block, level in zip(self.input_blocks, self.input_levels):
            h = self._run(block, h, emb, level)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, self.middle_level)
        middle = h.to(x.dtype)
        if h_only:
            return middle
        for block, level in zip(self.output_blocks, self.output_levels):
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb, level)
        out = self.out(h.to(x.dtype))
        return (out, middle) if return_h else out

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet input must be (B, 3, H, W); got shape {tuple(x.shape)}.")
        if x.shape[2] % self.downsample_factor or x.shape[3] % self.downsample_factor:
            raise ValueError(
                f"UNet input size {tuple(x.shape[2:])} must be divisible by "
                f"{self.downsample_factor} (2 ** (len(channel_mult) - 1)); crop or pad it."
            )
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"Timesteps must have shape (B,) = ({x.shape[0]},); got {tuple(t.shape)}."
            )
        if (y is None) != (self.num_classes is None):
            need = "needs class labels y" if self.num_classes is not None else "takes no labels y"
            raise ValueError(
                f"This UNet is {'' if self.num_classes else 'not '}class-conditional and {need}."
            )
        if y is not None and y.shape != (x.shape[0],):
            raise ValueError(f"Class labels must have shape ({x.shape[0]},); got {tuple(y.shape)}.")


def create_unet(
    preset: str | None = None, attention: AttentionBackend = "legacy", **options: Any
) -> UNetModel:
    """Build an ADM UNet from guided-diffusion ``create_model`` keywords or a preset.

    >>> create_unet(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2")
    >>> create_unet(preset="adm_256_uncond")            # OpenAI's 256x256 unconditional model
    >>> create_unet(preset="adm_256_uncond", dropout=0.1)  # keywords override the preset

    Weights are randomly initialised (output layers zero, as upstream); load a checkpoint with
    ``load_state_dict`` or use :class:`diffsr.diffusion.DiffusionPrior`.
    """
    merged = dict(get_preset(preset).unet) if preset is not None else {}
    merged.update(options)
    where = f"create_unet(preset={preset!r})" if preset else "create_unet"
    return UNetModel(UNetConfig.from_options(merged, where), attention=attention)


def reinit_zero_layers(model: nn.Module) -> nn.Module:
    """Give the zero-initialised output convolutions a default random init (in place).

    A freshly built UNet outputs zeros and has zero residual branches; tests and random-weight
    priors use this so that outputs depend on the input.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d) and not module.weight.detach().any():
            module.reset_parameters()
    return model
