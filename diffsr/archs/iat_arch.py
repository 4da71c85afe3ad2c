"""IAT: Illumination Adaptive Transformer for low-light enhancement and exposure correction.

Cui et al., "You Only Need 90K Parameters to Adapt Light: A Light Weight Transformer for Image
Enhancement and Exposure Correction", BMVC 2022.

Two branches share the input image ``I``:

* local branch (full resolution): a conv stem and two stacks of convolutional Transformer blocks
  predict a per-pixel multiplier ``M`` (ReLU) and offset ``A`` (tanh): ``I' = I * M + A``;
* global branch (1/4 resolution): 10 learnable queries attend to the image tokens; query 0 gives a
  gamma, queries 1-9 a 3x3 colour matrix ``C`` (both added to identity-like learnable bases).

Output: ``clamp(I' C^T, 1e-8, 1) ** gamma`` (colour matrix applied per pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["IAT"]

NUM_QUERIES = 10  # query 0 -> gamma, queries 1-9 -> the 3x3 colour matrix
RELEASE_DROP_PATH = (0.01, 0.05, 0.1)  # the released rates of the 3 blocks of each local stack
TASKS = ("lol", "exp")  # the release's `type`: 'exp' (exposure correction) freezes gamma_base


def drop_path_rates(drop_path: float | Sequence[float] | None, num_blocks: int) -> list[float]:
    """Stochastic-depth rate of each local block.

    None: the release's (0.01, 0.05, 0.1) for 3 blocks, else rising linearly from 0.01 to 0.1;
    a number: rising linearly from 0 to it; a sequence: one rate per block.
    """
    if drop_path is None:
        if num_blocks == len(RELEASE_DROP_PATH):
            return list(RELEASE_DROP_PATH)
        low, high = RELEASE_DROP_PATH[0], RELEASE_DROP_PATH[-1]
        return [low + (high - low) * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
    if isinstance(drop_path, int | float):
        return [float(drop_path) * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
    rates = [float(r) for r in drop_path]
    if len(rates) != num_blocks:
        raise ValueError(
            f"IAT: drop_path lists {len(rates)} rates for {num_blocks} local blocks; give one "
            f"rate per block, a single number, or null for the release's rates."
        )
    return rates


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class ChannelAffineNorm(nn.Module):
    """IAT's normalisation: a learnable channel-mixing matrix, then per-channel scale and shift.

    Unlike LayerNorm it uses no statistics, so the absolute light level survives.
    Operates on ``B x C x H x W``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(channels))
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("oc,bchw->bohw", self.mix.to(x.dtype), x)
        return mixed * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class ConvTransformerBlock(nn.Module):
    """Local-branch block: conv position encoding, depthwise "attention", conv MLP.

    ``x += dw3x3(x)``; ``x += s1 * (1x1 -> dw5x5 -> 1x1)(norm1(x))``;
    ``x += s2 * (1x1 -> GELU -> 1x1)(norm2(x))`` with layer scales ``s`` starting at 1e-4 and
    stochastic depth on both residual branches.
    """

    def __init__(self, channels: int, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.pos_embed = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm1 = ChannelAffineNorm(channels)
        self.token_mixer = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.Conv2d(channels, channels, 5, padding=2, groups=channels),
            nn.Conv2d(channels, channels, 1),
        )
        self.norm2 = ChannelAffineNorm(channels)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1)
        )
        self.layer_scale1 = nn.Parameter(torch.full((1, channels, 1, 1), 1e-4))
        self.layer_scale2 = nn.Parameter(torch.full((1, channels, 1, 1), 1e-4))
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        mixed = self.layer_scale1 * self.token_mixer(self.norm1(x))
        x = x + drop_path(mixed, self.drop_path_rate, self.training)
        fed = self.layer_scale2 * self.mlp(self.norm2(x))
        return x + drop_path(fed, self.drop_path_rate, self.training)


class LocalBranch(nn.Module):
    """Predicts the per-pixel multiplier (>= 0) and offset (in [-1, 1]), each B x 3 x H x W."""

    def __init__(
        self, in_channels: int, width: int, rates: Sequence[float], mlp_ratio: float
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)
        )
        self.mul_blocks = nn.Sequential(*(ConvTransformerBlock(width, mlp_ratio, r) for r in rates))
        self.add_blocks = nn.Sequential(*(ConvTransformerBlock(width, mlp_ratio, r) for r in rates))
        self.mul_head = nn.Sequential(nn.Conv2d(width, 3, 3, padding=1), nn.ReLU())
        self.add_head = nn.Sequential(nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())
        # The released initialisation: N(0, 2 / fan_out) with fan_out = k*k*out / groups.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (fan_out // module.groups)))
                nn.init.zeros_(module.bias)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.stem(img)
        mul = self.mul_head(self.mul_blocks(feat) + feat)
        add = self.add_head(self.add_blocks(feat) + feat)
        return mul, add


class QueryAttention(nn.Module):
    """Multi-head attention of ``num_queries`` learnable queries over image tokens.

    Keys and values are bias-free linear maps of the tokens; the value map starts at zero so the
    global branch initially outputs its identity-like bases.
    """

    def __init__(self, dim: int, num_heads: int, num_queries: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"IAT: global_width {dim} is not divisible by global_heads {num_heads}."
            )
        self.num_heads = num_heads
        self.queries = nn.Parameter(torch.ones(1, num_queries, dim))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.value.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: B x N x dim -> B x num_queries x dim."""
        batch, _, dim = tokens.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

        q = split_heads(self.queries.expand(batch, -1, -1))
        k, v = split_heads(self.key(tokens)), split_heads(self.value(tokens))
        attended = F.scaled_dot_product_attention(q.to(v.dtype), k, v)
        return self.proj(attended.transpose(1, 2).reshape(batch, -1, dim))


class GlobalBranch(nn.Module):
    """Predicts gamma (B) and a colour matrix (B x 3 x 3) from a 4x-downsampled image."""

    def __init__(
        self, in_channels: int, width: int, num_heads: int, mlp_ratio: float, task: str
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(width // 2),
            nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
        )
        self.pos_embed = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm1 = nn.LayerNorm(width)
        self.attn = QueryAttention(width, num_heads, NUM_QUERIES)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.gamma_head = nn.Linear(width, 1)
        self.color_head = nn.Linear(width, 1)
        # Exposure correction ('exp') keeps gamma_base fixed at 1, as the release does.
        self.gamma_base = nn.Parameter(torch.ones(1), requires_grad=task != "exp")
        self.color_base = nn.Parameter(torch.eye(3))
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.attn.value:
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.stem(img)
        feat = feat + self.pos_embed(feat)
        tokens = feat.flatten(2).transpose(1, 2)  # B x N x width
        # The queries replace the tokens, so there is no residual around the attention.
        queries = self.attn(self.norm1(tokens))
        queries = queries + self.mlp(self.norm2(queries))
        gamma = self.gamma_head(queries[:, 0]).squeeze(-1) + self.gamma_base
        color = self.color_head(queries[:, 1:]).view(-1, 3, 3) + self.color_base
        return gamma, color


@ARCH_REGISTRY.register()
class IAT(nn.Module):
    """Illumination Adaptive Transformer (Cui et al., BMVC 2022), 91,154 parameters by default.

    Computes the released network's function (cuiziteng/Illumination-Adaptive-Transformer,
    ``IAT_enhance/model``) and, through ``iat_official.py``, loads its released files.

    Input ``B x 3 x H x W`` in [0, 1] (low-light or badly exposed RGB), any size and
    batch; output the final enhanced image ``B x 3 x H x W`` in (0, 1]. The original code also
    returns the local multiplier and offset maps, but trains on the final image only, so only that
    is returned here.

    Args:
        local_width: channels of the local branch (16 in the release).
        num_local_blocks: blocks in each of the multiply and add stacks (3 in the release).
        drop_path: stochastic-depth rates of the local blocks: None for the release's
            (0.01, 0.05, 0.1), a number for rates rising linearly from 0 to it, or one rate per
            block.
        global_width: channels of the global branch (stem 3 -> width/2 -> width, two stride-2 convs).
        global_heads: attention heads of the query attention.
        mlp_ratio: hidden-width factor of the MLPs of both branches' blocks.
        task: the release's ``type`` argument (renamed: ``type`` names the network in
            ``network_g``): ``'lol'`` (low light, the default) or ``'exp'`` (exposure
            correction, where ``gamma_base`` is frozen at 1).
        in_dim: input channels (the release's argument; 3 for RGB).
        with_global: False drops the global branch: the output is then ``I * M + A``.
    """

    def __init__(
        self,
        local_width: int = 16,
        num_local_blocks: int = 3,
        drop_path: float | Sequence[float] | None = None,
        global_width: int = 64,
        global_heads: int = 4,
        mlp_ratio: float = 4.0,
        task: str = "lol",
        in_dim: int = 3,
        with_global: bool = True,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(
                f"IAT: task must be 'lol' (low light) or 'exp' (exposure correction, the "
                f"release's type='exp'), got {task!r}."
            )
        rates = drop_path_rates(drop_path, num_local_blocks)
        self.local_branch = LocalBranch(in_dim, local_width, rates, mlp_ratio)
        self.global_branch = (
            GlobalBranch(in_dim, global_width, global_heads, mlp_ratio, task)
            if with_global
            else None
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``img``: B x in_dim x H x W in [0, 1] -> enhanced B x 3 x H x W in (0, 1]."""
        mul, add = self.local_branch(img)
        locally_enhanced = img * mul + add
        if self.global_branch is None:
            return locally_enhanced
        gamma, color = self.global_branch(img)
        recoloured = torch.einsum(
            "bij,bjhw->bihw", color.to(locally_enhanced.dtype), locally_enhanced
        )
        return recoloured.clamp(1e-8, 1.0) ** gamma.view(-1, 1, 1, 1)
