"""MB-TaylorFormer: multi-branch linear Transformer for image dehazing.

Qiu et al., "MB-TaylorFormer: Multi-branch Efficient Transformer Expanded by Taylor Formula for
Image Dehazing", ICCV 2023.

A 4-level U-Net (Restormer layout). At every level a multi-scale patch embedding (a chain of
depthwise *deformable* 3x3 convolutions) yields one token map per branch; each branch runs its
own stack of Transformer blocks with Taylor-expanded linear attention, and the branches are merged
by selective kernel fusion. The deformable convolution is the pure-PyTorch one of
``diffsr.archs.deform_conv``, so the network runs anywhere without custom ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.archs.arch_util import crop_back, pad_to_multiple
from diffsr.archs.deform_conv import DeformConv2d, autocast_off
from diffsr.archs.official_rename import authors_argument
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["MBTaylorFormer", "gate_kernel_sizes", "taylor_linear_attention"]

# Paper configurations; the released code builds the refinement stage with num_blocks[0] blocks
# (its num_refinement_blocks argument is unused), which equals num_refinement_blocks for B and L.
VARIANTS = {
    "B": {"num_blocks": (2, 3, 3, 4), "num_refinement_blocks": 2, "num_paths": (2, 2, 2, 2)},
    "L": {"num_blocks": (4, 6, 6, 8), "num_refinement_blocks": 4, "num_paths": (2, 3, 3, 3)},
}


class BiasFreeLayerNorm2d(nn.Module):
    """Restormer's bias-free LayerNorm over channels: ``x / sqrt(var_c(x) + eps) * weight``.

    The mean is used for the variance but not subtracted (that is the "bias-free" part).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out: x.var(dim=1) is ~2x slower on NCHW tensors on CPU.
        centered = x - x.mean(dim=1, keepdim=True)
        variance = (centered * centered).mean(dim=1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps) * self.weight.view(1, -1, 1, 1)


class GatedDwFeedForward(nn.Module):
    """Restormer's gated depthwise feed-forward: 1x1 up, dw 3x3, GELU(a) * b, 1x1 down."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


def taylor_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Softmax attention with ``exp(q.k)`` replaced by its first-order Taylor term ``1 + q.k``.

    ``out_i = sum_j (1 + q_i.k_j) v_j / sum_j (1 + q_i.k_j)``, computed in O(N) by associativity:
    ``(sum_j v_j + q_i (K^T V)) / (N + q_i . sum_j k_j + eps)`` (the released network adds
    ``eps = 1e-6`` to the denominator).

    Args:
        q, k: ``B x heads x d x N``; the weights ``1 + q.k`` must stay positive, which holds when
            ``|q| |k| < 1`` (the callers L2-normalise them to length 0.5 by default).
        v: ``B x heads x d_v x N``.

    Returns:
        ``B x heads x d_v x N`` in float32 (or float64 for float64 inputs), autocast disabled:
        the sums run over all pixels and need the precision.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    with autocast_off(q.device):
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        num_tokens = q.shape[-1]
        key_value = torch.einsum("bhdn,bhen->bhde", k, v)
        numerator = v.sum(dim=-1, keepdim=True) + torch.einsum("bhde,bhdn->bhen", key_value, q)
        denominator = num_tokens + torch.einsum("bhd,bhdn->bhn", k.sum(dim=-1), q) + eps
        return numerator / denominator.unsqueeze(2)


def l2_normalize(x: torch.Tensor, dim: int, length: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """``x / (|x| / length + eps)``: ``x`` scaled to L2 norm ~``length`` along ``dim``.

    This is the released network's normalisation (``eps = 1e-6`` added to the scaled norm); a
    zero vector stays zero.
    """
    return x / ((x * x).sum(dim, keepdim=True).sqrt() / length + eps)


def gate_kernel_sizes(num_heads: int) -> list[int]:
    """Kernel size of the gate convolution of each head: 3, 5 and 7 spread over the heads.

    Heads are split into ``min(3, max(1, num_heads // 2))`` near-equal groups (extra heads go to
    the larger kernels), reproducing the paper's settings 1 -> [3], 2 -> [3, 3],
    4 -> [3, 3, 5, 5] and 8 -> [3, 3, 5, 5, 5, 7, 7, 7].
    """
    num_groups = min(3, max(1, num_heads // 2))
    base, extra = divmod(num_heads, num_groups)
    sizes = []
    for group in range(num_groups):
        count = base + (1 if group >= num_groups - extra else 0)
        sizes += [3 + 2 * group] * count
    return sizes


class TaylorAttentionGate(nn.Module):
    """Per-head sigmoid gate from grouped convolutions over each head's [q; k] channels.

    Heads sharing a kernel size share one grouped convolution (one group per head), so each head
    sees only its own ``2 * head_dim`` channels and gives one gate map.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        sizes = gate_kernel_sizes(num_heads)
        self.heads_per_conv = [sizes.count(s) for s in sorted(set(sizes))]
        self.convs = nn.ModuleList(
            nn.Conv2d(n * 2 * head_dim, n, size, padding=size // 2, groups=n)
            for n, size in zip(self.heads_per_conv, sorted(set(sizes)))
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``q``, ``k``: B x heads x d x H x W -> gate B x heads x 1 x H x W in (0, 1)."""
        batch, _, _, height, width = q.shape
        qk = torch.cat((q, k), dim=2)  # per head: its q channels, then its k channels
        chunks = qk.split(self.heads_per_conv, dim=1)
        gates = [
            conv(chunk.reshape(batch, -1, height, width)) for conv, chunk in zip(self.convs, chunks)
        ]
        return torch.sigmoid(torch.cat(gates, dim=1)).unsqueeze(2)


class TaylorAttention(nn.Module):
    """Multi-head Taylor linear attention over all pixels (channel layout of Restormer's MDTA).

    q, k, v come from a 1x1 then a depthwise 3x3 convolution; q and k are L2-normalised per
    token and head to length ``qk_norm_scale``; the attended values are scaled by a learnable
    per-head temperature and by the sigmoid gate, then projected by a 1x1 convolution. As in the
    release, ``1e-6`` is added to the scaled norms of q and k and to the attention denominator.
    """

    def __init__(self, channels: int, num_heads: int, qk_norm_scale: float = 0.5) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"MBTaylorFormer: width {channels} is not divisible by its {num_heads} heads; "
                f"change 'widths' or 'heads'."
            )
        self.num_heads = num_heads
        self.qk_norm_scale = qk_norm_scale
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(
            3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=False
        )
        self.gate = TaylorAttentionGate(num_heads, channels // num_heads)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        heads = self.num_heads
        qkv = self.qkv_dwconv(self.qkv(x)).reshape(batch, 3, heads, -1, height, width)
        q = l2_normalize(qkv[:, 0], dim=2, length=self.qk_norm_scale)
        k = l2_normalize(qkv[:, 1], dim=2, length=self.qk_norm_scale)
        v = qkv[:, 2]
        gate = self.gate(q, k)  # B x heads x 1 x H x W
        attended = taylor_linear_attention(q.flatten(3), k.flatten(3), v.flatten(3), eps=1e-6)
        attended = attended.view_as(v).to(v.dtype) * self.temperature.unsqueeze(-1) * gate
        return self.project_out(attended.reshape(batch, channels, height, width))


class TaylorTransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``."""

    def __init__(
        self, channels: int, num_heads: int, ffn_expansion: float, qk_norm_scale: float
    ) -> None:
        super().__init__()
        self.norm1 = BiasFreeLayerNorm2d(channels)
        self.attn = TaylorAttention(channels, num_heads, qk_norm_scale)
        self.norm2 = BiasFreeLayerNorm2d(channels)
        self.ffn = GatedDwFeedForward(channels, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


OFFSET_INITS = ("release", "zero")


class DeformableDwEmbed(nn.Module):
    """Depthwise deformable 3x3 conv, 1x1 conv, Hardswish (one step of the patch embedding).

    Offsets (one (dy, dx) pair per kernel point, shared by all channels) come from a depthwise
    3x3 and a 1x1 convolution and are clamped to ``offset_clamp = (low, high)`` pixels (None: no
    clamp). ``offset_init='release'`` draws the offset predictor and the 1x1 conv from
    ``N(0, 2 / (k*k*out_channels))`` as the released code does; ``'zero'`` starts the offset
    predictor's last layer at zero (as in the DCN paper), so training starts from a plain dw conv.
    """

    def __init__(
        self, channels: int, offset_clamp: tuple[float, float] | None, offset_init: str
    ) -> None:
        super().__init__()
        self.offset_clamp = offset_clamp
        self.offset_net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, 2 * 9, 1, bias=False),
        )
        self.dwconv = DeformConv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pwconv = nn.Conv2d(channels, channels, 1, bias=False)
        self.act = nn.Hardswish()
        if offset_init == "zero":
            nn.init.zeros_(self.offset_net[1].weight)
        else:
            for conv in (*self.offset_net, self.pwconv):
                fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_net(x)
        if self.offset_clamp is not None:
            offset = offset.clamp(*self.offset_clamp)
        return self.act(self.pwconv(self.dwconv(x, offset)))


class SelectiveKernelFusion(nn.Module):
    """SKFF (Zamir et al., MIRNet): softmax-over-branches channel attention from pooled sums."""

    def __init__(self, channels: int, num_branches: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.squeeze = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.PReLU())
        self.excite = nn.ModuleList(
            nn.Conv2d(hidden, channels, 1, bias=False) for _ in range(num_branches)
        )

    def forward(self, branches: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(list(branches), dim=1)  # B x branches x C x H x W
        pooled = stacked.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        squeezed = self.squeeze(pooled)
        logits = torch.stack([fc(squeezed) for fc in self.excite], dim=1)
        return (stacked * logits.softmax(dim=1)).sum(dim=1)


class MultiBranchStage(nn.Module):
    """One U-Net level: chained deformable embeddings -> per-branch blocks -> SKFF, + residual.

    Branch ``i`` receives the output of ``i + 1`` chained deformable convolutions, so the branches
    see increasingly large (and deformed) receptive fields.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        num_blocks: int,
        num_paths: int,
        ffn_expansion: float,
        qk_norm_scale: float,
        offset_clamp: tuple[float, float] | None,
        offset_init: str,
    ) -> None:
        super().__init__()
        self.embeds = nn.ModuleList(
            DeformableDwEmbed(channels, offset_clamp, offset_init) for _ in range(num_paths)
        )
        self.branches = nn.ModuleList(
            nn.Sequential(
                *(
                    TaylorTransformerBlock(channels, num_heads, ffn_expansion, qk_norm_scale)
                    for _ in range(num_blocks)
                )
            )
            for _ in range(num_paths)
        )
        # A softmax over a single branch is constant: one path needs no fusion (and no weights).
        self.fusion = SelectiveKernelFusion(channels, num_paths) if num_paths > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, tokens = [], x
        for embed, branch in zip(self.embeds, self.branches):
            tokens = embed(tokens)
            outputs.append(branch(tokens))
        fused = self.fusion(outputs) if self.fusion is not None else outputs[0]
        return fused + x


class Downsample(nn.Sequential):
    """dw 3x3, 1x1 to ``out/4`` channels, pixel-unshuffle: (C, H, W) -> (out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels // 4, 1, bias=False),
            nn.PixelUnshuffle(2),
        )


class Upsample(nn.Sequential):
    """dw 3x3, 1x1 to ``4*out`` channels, pixel-shuffle: (C, H, W) -> (out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, 4 * out_channels, 1, bias=False),
            nn.PixelShuffle(2),
        )


def _clamp_range(offset_clamp: float | Sequence[float] | None) -> tuple[float, float] | None:
    """``offset_clamp`` as (low, high): ``c`` -> (-c, c); the authors' ``[low, high]``; None."""
    if offset_clamp is None:
        return None
    if isinstance(offset_clamp, int | float):
        return (-float(offset_clamp), float(offset_clamp))
    pair = tuple(float(v) for v in offset_clamp)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(
            f"MBTaylorFormer: offset_clamp must be a number c (clamp to [-c, c]), a pair "
            f"[low, high] with low <= high, or null (no clamp); got {offset_clamp!r}."
        )
    return pair


@ARCH_REGISTRY.register(name="MB_TaylorFormer")  # the authors' class name
@ARCH_REGISTRY.register()
class MBTaylorFormer(nn.Module):
    """MB-TaylorFormer (Qiu et al., ICCV 2023) for dehazing; B: 2.68 M params, L: 7.43 M.

    Computes the released network's function (FVL2020/ICCV-2023-MB-TaylorFormer) and, through
    ``taylorformer_official.py``, loads its released checkpoints.

    Input ``B x 3 x H x W`` in [0, 1], any H and W (reflect-padded to a multiple of 8
    inside and cropped back, as the authors' test script does); output ``B x 3 x H x W``, the
    input plus a predicted residual (not clamped).

    Args:
        variant: ``'B'`` or ``'L'``; picks the defaults of ``num_blocks``,
            ``num_refinement_blocks`` and ``num_paths`` (B: [2,3,3,4], 2, [2,2,2,2];
            L: [4,6,6,8], 4, [2,3,3,3]).
        widths: channels of the 4 levels (authors: ``dim``); the decoder's level 1 and the
            refinement stage run at ``2 * widths[0]`` (skip concatenation without reduction).
        heads: attention heads per level.
        num_blocks: Transformer blocks per branch at each level (None = variant default).
        num_refinement_blocks: blocks of the refinement stage (None = ``num_blocks[0]``, which
            is what the release always uses; the release ignores this argument).
        num_paths: branches per level (authors: ``num_path``; None = variant default).
        ffn_expansion: hidden-width factor of the gated feed-forward (authors:
            ``ffn_expansion_factor``; the release always uses 2.66, which is the default).
        qk_norm_scale: length of q and k after L2 normalisation (authors: ``qk_norm``; 0.5 in
            the released configs, which keeps the Taylor weights ``1 + q.k`` within
            [0.75, 1.25]).
        offset_clamp: deformable offsets are clamped to ``[-c, c]`` for a number ``c``, to
            ``[low, high]`` for the authors' pair, or not at all for None.
        offset_init: ``'release'`` (the released initialisation of the offset predictors) or
            ``'zero'`` (their last layer starts at zero: training starts from plain dw convs).
        bias: biases in the decoder's 1x1 channel reductions (and the dual-pixel skip conv).
        inp_channels, out_channels: image channels in and out (3 and 3 in the release; they
            must be equal unless ``dual_pixel_task``).
        dual_pixel_task: the authors' defocus-deblurring mode: a 1x1 skip conv from the
            embedding to the refinement output and no input residual.
        dim, num_path, ffn_expansion_factor, qk_norm: the authors' names of ``widths``,
            ``num_paths``, ``ffn_expansion`` and ``qk_norm_scale`` (give one name or the other).
        LayerNorm_type, model_name: accepted for the authors' option files and unused, as in
            the release (which always uses bias-free LayerNorm); LayerNorm_type must be
            ``'WithBias'`` or ``'BiasFree'``.
    """

    def __init__(
        self,
        variant: str = "B",
        widths: Sequence[int] = (24, 48, 72, 96),
        heads: Sequence[int] = (1, 2, 4, 8),
        num_blocks: Sequence[int] | None = None,
        num_refinement_blocks: int | None = None,
        num_paths: Sequence[int] | None = None,
        ffn_expansion: float = 2.66,
        qk_norm_scale: float = 0.5,
        offset_clamp: float | Sequence[float] | None = 3.0,
        offset_init: str = "release",
        bias: bool = False,
        inp_channels: int = 3,
        out_channels: int = 3,
        dual_pixel_task: bool = False,
        dim: Sequence[int] | None = None,
        num_path: Sequence[int] | None = None,
        ffn_expansion_factor: float | None = None,
        qk_norm: float | None = None,
        LayerNorm_type: str = "WithBias",  # the authors' argument name
        model_name: Any = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"MBTaylorFormer: unknown variant {variant!r}; use one of {sorted(VARIANTS)}."
            )
        if offset_init not in OFFSET_INITS:
            raise ValueError(
                f"MBTaylorFormer: offset_init must be one of {OFFSET_INITS}, got {offset_init!r}."
            )
        if LayerNorm_type not in ("WithBias", "BiasFree"):
            raise ValueError(
                f"MBTaylorFormer: LayerNorm_type must be 'WithBias' or 'BiasFree' (the release "
                f"uses bias-free LayerNorm either way), got {LayerNorm_type!r}."
            )
        if not dual_pixel_task and inp_channels != out_channels:
            raise ValueError(
                f"MBTaylorFormer: the output adds the input, so inp_channels ({inp_channels}) "
                f"must equal out_channels ({out_channels}) unless dual_pixel_task is true."
            )
        preset = VARIANTS[variant]
        name = "MBTaylorFormer"
        widths = tuple(authors_argument(name, ("widths", widths, (24, 48, 72, 96)), ("dim", dim)))
        num_paths = authors_argument(name, ("num_paths", num_paths, None), ("num_path", num_path))
        num_paths = tuple(num_paths if num_paths is not None else preset["num_paths"])
        ffn_expansion = authors_argument(
            name,
            ("ffn_expansion", ffn_expansion, 2.66),
            ("ffn_expansion_factor", ffn_expansion_factor),
        )
        qk_norm_scale = authors_argument(
            name, ("qk_norm_scale", qk_norm_scale, 0.5), ("qk_norm", qk_norm)
        )
        num_blocks = tuple(num_blocks if num_blocks is not None else preset["num_blocks"])
        heads = tuple(heads)
        if num_refinement_blocks is None:
            num_refinement_blocks = num_blocks[0]
        per_level = {
            "widths": widths,
            "heads": heads,
            "num_blocks": num_blocks,
            "num_paths": num_paths,
        }
        for name, value in per_level.items():
            if len(value) != 4:
                raise ValueError(
                    f"MBTaylorFormer: {name} needs 4 values (one per level), got {value!r}."
                )
        if any(w % 4 for w in widths[1:]):
            raise ValueError(f"MBTaylorFormer: widths[1:] must be multiples of 4, got {widths!r}.")
        clamp = _clamp_range(offset_clamp)
        self.config = {
            "widths": widths,
            "heads": heads,
            "num_blocks": num_blocks,
            "num_refinement_blocks": num_refinement_blocks,
            "num_paths": num_paths,
        }
        w1, w2, w3, w4 = widths

        def stage(channels: int, level: int, blocks: int) -> MultiBranchStage:
            return MultiBranchStage(
                channels,
                heads[level],
                blocks,
                num_paths[level],
                ffn_expansion,
                qk_norm_scale,
                clamp,
                offset_init,
            )

        self.embed = nn.Conv2d(inp_channels, w1, 3, padding=1, bias=False)
        self.encoder1 = stage(w1, 0, num_blocks[0])
        self.down1 = Downsample(w1, w2)
        self.encoder2 = stage(w2, 1, num_blocks[1])
        self.down2 = Downsample(w2, w3)
        self.encoder3 = stage(w3, 2, num_blocks[2])
        self.down3 = Downsample(w3, w4)
        self.bottleneck = stage(w4, 3, num_blocks[3])
        self.up3 = Upsample(w4, w3)
        self.reduce3 = nn.Conv2d(2 * w3, w3, 1, bias=bias)
        self.decoder3 = stage(w3, 2, num_blocks[2])
        self.up2 = Upsample(w3, w2)
        self.reduce2 = nn.Conv2d(2 * w2, w2, 1, bias=bias)
        self.decoder2 = stage(w2, 1, num_blocks[1])
        self.up1 = Upsample(w2, w1)
        # As in Restormer, level 1 of the decoder keeps all 2*w1 concatenated channels.
        self.decoder1 = stage(2 * w1, 0, num_blocks[0])
        self.refinement = stage(2 * w1, 0, num_refinement_blocks)
        self.skip = nn.Conv2d(w1, 2 * w1, 1, bias=bias) if dual_pixel_task else None
        self.output = nn.Conv2d(2 * w1, out_channels, 3, padding=1, bias=False)

    @property
    def variant(self) -> str:
        """``'B'`` or ``'L'`` when the depths are that released variant's, else ``'custom'``.

        Read by the checkpoint loader's wrong-variant message.
        """
        for name, preset in VARIANTS.items():
            if all(self.config[key] == value for key, value in preset.items()):
                return name
        return "custom"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B x C_in x H x W in [0, 1] -> B x C_out x H x W."""
        padded, size = pad_to_multiple(x, 8)
        embedded = self.embed(padded)
        enc1 = self.encoder1(embedded)
        enc2 = self.encoder2(self.down1(enc1))
        enc3 = self.encoder3(self.down2(enc2))
        latent = self.bottleneck(self.down3(enc3))
        dec3 = self.decoder3(self.reduce3(torch.cat((self.up3(latent), enc3), dim=1)))
        dec2 = self.decoder2(self.reduce2(torch.cat((self.up2(dec3), enc2), dim=1)))
        dec1 = self.decoder1(torch.cat((self.up1(dec2), enc1), dim=1))
        refined = self.refinement(dec1)
        if self.skip is not None:  # dual-pixel mode: no input residual
            return crop_back(self.output(refined + self.skip(embedded)), size)
        return crop_back(self.output(refined) + padded, size)
