"""Building blocks of the ADM UNet (Dhariwal & Nichol 2021), laid out so that parameter names
match OpenAI guided-diffusion checkpoints.

Precision rules follow the released models: group norms, the timestep embedding MLPs and the
attention softmax run in float32 even under autocast or with a reduced-precision torso;
convolutions and attention matmuls run in the dtype of the torso's weights (or the autocast
dtype).
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionBlock",
    "Downsample",
    "EmbeddingBlock",
    "GroupNorm32",
    "ResBlock",
    "TimestepSequential",
    "Upsample",
    "float32_region",
    "timestep_embedding",
    "zero_initialised",
]

AttentionBackend = Literal["legacy", "sdpa"]


def float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which autocast is off, so that float32 inputs stay float32."""
    if not torch.amp.is_autocast_available(device.type):  # e.g. "meta": nothing to turn off
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t * f_i), sin(t * f_i)]`` with ``f_i = max_period**(-i/half)``.

    Args:
        timesteps: (B,) integer or fractional timesteps.
        dim: embedding width; an odd width gets one trailing zero column.
    Returns:
        (B, dim) float32 tensor.
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    angles = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm computed in (at least) float32, returned in the input's dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with float32_region(x.device):
            out = F.group_norm(
                x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps
            )
        return out.to(x.dtype)


class EmbeddingBlock(nn.Module):
    """Marker base class: ``forward(x, emb)`` also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TimestepSequential(nn.Sequential):
    """``nn.Sequential`` that hands the timestep embedding to the layers that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbeddingBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by an optional 3x3 convolution (``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if not use_conv and self.out_channels != channels:
            raise ValueError("Upsample without a convolution cannot change the channel count.")
        self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class Downsample(nn.Module):
    """2x downsampling by a strided 3x3 convolution, or by average pooling (``op``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        elif self.out_channels == channels:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)
        else:
            raise ValueError("Downsample without a convolution cannot change the channel count.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def resample(x: torch.Tensor, direction: Literal["up", "down"] | None) -> torch.Tensor:
    """Parameter-free 2x resampling used inside up/down residual blocks."""
    if direction == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if direction == "down":
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    return x


class ResBlock(EmbeddingBlock):
    """Residual block conditioned on the timestep embedding, optionally resampling by 2.

    Args:
        channels: input channels.
        emb_channels: width of the timestep embedding.
        dropout: dropout probability before the last convolution.
        out_channels: output channels (default: ``channels``); a 1x1 ``skip_connection``
            convolution matches the widths when they differ.
        use_scale_shift_norm: condition by ``norm(h) * (1 + scale) + shift`` (FiLM) instead of
            adding the embedding.
        resample_direction: ``"up"``, ``"down"`` or None.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        resample_direction: Literal["up", "down"] | None = None,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample_direction = resample_direction
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        emb_width = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_width))
        self.out_layers = nn.Sequential(
            GroupNorm32(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_initialised(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels != channels:
            self.skip_connection: nn.Module = nn.Conv2d(channels, self.out_channels, 1)
        else:
            self.skip_connection = nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm, act, conv = self.in_layers
        # Resampling sits between the activation and the convolution, on both paths.
        h = conv(resample(act(norm(x)), self.resample_direction))
        x = resample(x, self.resample_direction)

        with float32_region(emb.device):
            emb_out = self.emb_layers(emb.to(self.emb_layers[1].weight.dtype))
        emb_out = emb_out.to(h.dtype)[:, :, None, None]
        out_norm, *out_rest = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + emb_out)
        for layer in out_rest:
            h = layer(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``qkv`` and ``proj_out`` are 1x1 ``Conv1d`` layers (checkpoint layout). Two channel layouts
    of the ``qkv`` output exist: the legacy order groups channels per head as ``[q, k, v]``;
    the new order is ``[q_all_heads, k_all_heads, v_all_heads]``. The backend ``"legacy"`` is the
    reference math (q and k each scaled by ``ch**-0.25``, softmax in float32); ``"sdpa"``
    computes the same function with ``F.scaled_dot_product_attention``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
        backend: AttentionBackend = "legacy",
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"Attention width {channels} is not divisible by num_head_channels "
                    f"{num_head_channels}; choose num_head_channels dividing every level's width."
                )
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(
                f"Attention width {channels} is not divisible by {self.num_heads} heads."
            )
        self.use_new_attention_order = use_new_attention_order
        self.backend = backend
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_initialised(nn.Conv1d(channels, channels, 1))

    @property
    def backend(self) -> AttentionBackend:
        return self._backend

    @backend.setter
    def backend(self, name: AttentionBackend) -> None:
        if name not in ("legacy", "sdpa"):
            raise ValueError(f"Unknown attention backend {name!r}; use 'legacy' or 'sdpa'.")
        self._backend = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        tokens = x.reshape(batch, channels, -1)
        qkv = self.qkv(self.norm(tokens))
        attend = self.attend_sdpa if self.backend == "sdpa" else self.attend_legacy
        h = self.proj_out(attend(qkv))
        return (tokens + h).reshape(batch, channels, *spatial)

    def split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3*C, T) -> q, k, v each (B, heads, ch, T), following the configured layout."""
        batch, width, length = qkv.shape
        ch = width // (3 * self.num_heads)
        if self.use_new_attention_order:
            q, k, v = qkv.reshape(batch, 3, self.num_heads, ch, length).unbind(1)
        else:
            q, k, v = qkv.reshape(batch, self.num_heads, 3, ch, length).unbind(2)
        return q, k, v

    def attend_legacy(self, qkv: torch.Tensor) -> torch.Tensor:
        """Reference attention: (B, 3*C, T) -> (B, C, T)."""
        batch, _, length = qkv.shape
        q, k, v = (part.reshape(-1, part.shape[2], length) for part in self.split_heads(qkv))
        # Scaling q and k separately (instead of the logits) keeps fp16 logits in range.
        scale = q.shape[1] ** -0.25
        logits = torch.bmm((q * scale).transpose(1, 2), k * scale)  # (B*heads, T_q, T_k)
        weights = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
        out = torch.bmm(v, weights.transpose(1, 2))  # (B*heads, ch, T_q)
        return out.reshape(batch, -1, length)

    def attend_sdpa(self, qkv: torch.Tensor) -> torch.Tensor:
        """Fused attention, same function as :meth:`attend_legacy`: (B, 3*C, T) -> (B, C, T).

        q, k and v are made contiguous (B, heads, T, ch): with the head layout's stride T on
        the last dimension, the dispatcher rejects the fused (flash / memory-efficient)
        kernels and falls back to the math kernel, which stores the attention maps.
        """
        batch, _, length = qkv.shape
        q, k, v = (part.transpose(-1, -2).contiguous() for part in self.split_heads(qkv))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(ch)
        return out.transpose(-1, -2).reshape(batch, -1, length)


def zero_initialised(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` (output layers start as the identity residual)."""
    for param in module.parameters():
        nn.init.zeros_(param)
    return module
