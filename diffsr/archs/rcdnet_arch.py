"""RCDNet: rain convolutional dictionary network.

Wang, Xie, Zhao, Meng, "A Model-driven Deep Neural Network for Single Image Rain Removal",
CVPR 2020.

The rainy image is modelled as ``O = B + sum_n C_n * M_n``: background ``B`` plus a rain layer
made of ``N`` shared rain kernels ``C_n`` convolved with sparse rain maps ``M_n``. The network
unfolds proximal gradient descent on this model. Each stage takes a gradient step on the rain
maps, then on the background (learnable step sizes), and replaces each proximal operator by a
small residual network (M-net with a learnable soft threshold, B-net). The B-net carries
extra "dual" channels ``Z`` from stage to stage.

The released model computes on pixel values in [0, ``rgb_range``] = [0, 255] (its thresholds,
initial step sizes and kernels are tuned to that range). diffsr's data is in [0, 1], so the
network scales its input by ``rgb_range`` on entry and divides every output by it: with the
released weights, ``RCDNet()(x) == released(255 x) / 255``.
"""

import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["RCDNet", "RCDNetOutput", "streak_kernels"]

# The released code's names for the constructor options (its ``args``), diffsr's name for each.
AUTHORS_ARGUMENTS = {
    "stage": "num_stages",
    "num_M": "num_rain_kernels",
    "num_Z": "num_dual_channels",
    "T": "num_res_blocks",
}

# The released model scales the rain kernels and step sizes by 0.1 so that their learnable
# values (initialised around 1) change the iterates slowly; kept for the same dynamics.
KERNEL_SCALE = 0.1
STEP_SCALE = 0.1


class RCDNetOutput(list):
    """Background estimates ``[B0, B1, ..., BS, B_final]`` (final last), each B x 3 x H x W.

    ``rain_layers`` holds the rain-layer estimates ``[R1, ..., RS]`` (``R_s = C * M_s``) for the
    rain terms of :class:`diffsr.losses.rcdnet_loss.RCDNetLoss`.
    """

    def __init__(
        self, backgrounds: Iterable[torch.Tensor], rain_layers: Iterable[torch.Tensor] = ()
    ) -> None:
        super().__init__(backgrounds)
        self.rain_layers = list(rain_layers)


def streak_kernels(num_kernels: int, size: int) -> torch.Tensor:
    """Initial rain kernels: vertical streak-shaped Gaussians, ``num_kernels x size x size``.

    Streak length grows with the kernel index; the first 3/8 are one pixel thin, the rest
    three pixels thick with softer edges. Each kernel sums to 1.
    """
    radius = (size - 1) / 2
    coords = torch.arange(size, dtype=torch.float32) - radius
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    num_thin = math.ceil(num_kernels * 3 / 8)
    kernels = []
    for index in range(num_kernels):
        thin = index < num_thin
        core = 0.0 if thin else 1.0  # half-width of the flat core, in pixels
        sigma = 0.25 if thin else 0.5
        length = 2.5 + 3.0 * (index + 1) / 12
        dx = (cols.abs() - core).clamp_min(0)
        dy = (rows.abs() - core).clamp_min(0) / length
        kernel = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
        kernels.append(kernel / kernel.sum())
    return torch.stack(kernels)


class ResidualBNBlock(nn.Module):
    """``relu(x + BN(conv(relu(BN(conv(x))))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class BackgroundProxNet(nn.Sequential):
    """B-net: residual blocks on ``[background (3), dual channels Z]``."""

    def __init__(self, channels: int, num_blocks: int) -> None:
        super().__init__(*(ResidualBNBlock(channels) for _ in range(num_blocks)))


class RainMapProxNet(nn.Module):
    """M-net: residual blocks, then a learnable per-channel soft threshold ``relu(m - tau)``."""

    def __init__(self, channels: int, num_blocks: int, threshold: float = 0.5) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBNBlock(channels) for _ in range(num_blocks)))
        self.threshold = nn.Parameter(torch.full((1, channels, 1, 1), threshold))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(maps) - self.threshold)


def resolve_authors_arguments(
    ours: dict[str, int], defaults: dict[str, int], theirs: dict[str, int | None]
) -> dict[str, int]:
    """diffsr's options with the released code's names (``AUTHORS_ARGUMENTS``) filled in.

    An option given under both names must agree (a diffsr value left at its default yields).
    """
    resolved = dict(ours)
    for their_name, value in theirs.items():
        if value is None:
            continue
        our_name = AUTHORS_ARGUMENTS[their_name]
        if resolved[our_name] not in (defaults[our_name], value):
            raise ValueError(
                f"RCDNet: {their_name}={value} (the released code's name) contradicts "
                f"{our_name}={resolved[our_name]}; give one of the two."
            )
        resolved[our_name] = value
    return resolved


@ARCH_REGISTRY.register(name="Mainnet")  # the released code's class name
@ARCH_REGISTRY.register()
class RCDNet(nn.Module):
    """Unfolded proximal-gradient network for single-image rain removal.

    Args:
        num_stages: unfolded stages ``S`` (paper: 17 for the synthetic benchmarks).
        num_rain_kernels: rain kernels / rain maps ``N`` (paper: 32).
        num_dual_channels: extra channels ``Z`` carried by the B-nets (paper: 32).
        num_res_blocks: residual blocks in each M-net and B-net (paper: 4).
        kernel_size: side of the rain kernels, odd (paper: 9).
        rgb_range: pixel value of white inside the network (released: 255). The input in
            [0, 1] is multiplied by it and every output divided by it, so inputs and outputs
            stay in [0, 1] while the thresholds and steps act as in the release. 1 computes
            directly on [0, 1] values (then ``relu(O - B0 - tau)`` with ``tau`` near 1 is zero
            and the first stage's threshold and kernels get no gradient).
        stage, num_M, num_Z, T: the released code's names for ``num_stages``,
            ``num_rain_kernels``, ``num_dual_channels`` and ``num_res_blocks`` (its ``T`` is
            parsed but its proximal nets always have 4 blocks, which is the default here).

    Input: rainy image ``O``, ``B x 3 x H x W`` in [0, 1], any size. Output: an
    :class:`RCDNetOutput`, i.e. the list of ``S + 2`` background estimates ``[B0 (initial),
    B1, ..., BS, B_final (after a last refinement B-net)]`` each ``B x 3 x H x W`` in the
    input's units (not clamped), with the ``S`` rain-layer estimates ``B x 3 x H x W`` (same
    units) in its ``rain_layers`` attribute.

    The default configuration has 2,975,186 parameters. The released model reports
    3,166,355 because it also allocates parameters its forward pass never uses (15 more copies
    of the shared rain kernels, one M-net and one step size); see docs/archs_derain_lowlight.md.
    """

    def __init__(
        self,
        num_stages: int = 17,
        num_rain_kernels: int = 32,
        num_dual_channels: int = 32,
        num_res_blocks: int = 4,
        kernel_size: int = 9,
        rgb_range: float = 255.0,
        *,
        stage: int | None = None,
        num_M: int | None = None,  # the released code's names
        num_Z: int | None = None,
        T: int | None = None,
    ) -> None:
        super().__init__()
        sizes = resolve_authors_arguments(
            dict(
                num_stages=num_stages,
                num_rain_kernels=num_rain_kernels,
                num_dual_channels=num_dual_channels,
                num_res_blocks=num_res_blocks,
            ),
            dict(num_stages=17, num_rain_kernels=32, num_dual_channels=32, num_res_blocks=4),
            dict(stage=stage, num_M=num_M, num_Z=num_Z, T=T),
        )
        num_stages, num_rain_kernels = sizes["num_stages"], sizes["num_rain_kernels"]
        num_dual_channels, num_res_blocks = sizes["num_dual_channels"], sizes["num_res_blocks"]
        if num_stages < 1:
            raise ValueError(f"RCDNet: num_stages must be >= 1, got {num_stages}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"RCDNet: kernel_size must be odd, got {kernel_size}.")
        if not rgb_range > 0:
            raise ValueError(f"RCDNet: rgb_range must be positive, got {rgb_range}.")
        self.rgb_range = float(rgb_range)
        self.num_stages = num_stages
        self.padding = kernel_size // 2
        b_channels = 3 + num_dual_channels

        kernels = streak_kernels(num_rain_kernels, kernel_size)
        kernels = kernels.unsqueeze(0).expand(3, -1, -1, -1).clone()  # 3 x N x k x k, per colour
        # The first rain-map update (from M = 0) has its own copy of the kernels; all later
        # updates and every synthesis R = C * M share one set, as in the released model.
        self.first_rain_kernels = nn.Parameter(kernels.clone())
        self.rain_kernels = nn.Parameter(kernels)
        # Initial dual channels: a 3x3 mean filter of the rainy image, learnable.
        self.dual_init = nn.Parameter(torch.full((num_dual_channels, 3, 3, 3), 1 / 9))
        # Soft threshold for the sparse initial rain layer.
        self.rain_threshold = nn.Parameter(torch.ones(1))
        self.rain_map_steps = nn.Parameter(torch.ones(num_stages - 1))
        self.background_steps = nn.Parameter(torch.full((num_stages,), 5.0))

        self.initial_background_net = BackgroundProxNet(b_channels, num_res_blocks)
        self.rain_map_nets = nn.ModuleList(
            RainMapProxNet(num_rain_kernels, num_res_blocks) for _ in range(num_stages)
        )
        self.background_nets = nn.ModuleList(
            BackgroundProxNet(b_channels, num_res_blocks) for _ in range(num_stages)
        )
        self.refine_net = BackgroundProxNet(b_channels, num_res_blocks)

    def synthesize_rain(self, maps: torch.Tensor) -> torch.Tensor:
        """Rain layer ``sum_n C_n * M_n``: B x N x H x W maps -> B x 3 x H x W."""
        return F.conv2d(maps, self.rain_kernels * KERNEL_SCALE, padding=self.padding)

    def rain_gradient(self, residual: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Adjoint of the synthesis (``C^T * residual``): B x 3 x H x W -> B x N x H x W."""
        return F.conv_transpose2d(residual, kernels * KERNEL_SCALE, padding=self.padding)

    def background_step(
        self,
        stage: int,
        background: torch.Tensor,
        dual: torch.Tensor,
        rainy: torch.Tensor,
        rain: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient step on ``||O - R - B||^2`` in ``B``, then the stage's B-net."""
        step = self.background_steps[stage] * STEP_SCALE
        background = background - step * (background - (rainy - rain))
        out = self.background_nets[stage](torch.cat([background, dual], dim=1))
        return out[:, :3], out[:, 3:]

    def forward(self, rainy: torch.Tensor) -> RCDNetOutput:
        """``rainy``: B x 3 x H x W in [0, 1]; the estimates come back in the same units."""
        rainy = rainy * self.rgb_range
        dual = F.conv2d(rainy, self.dual_init, padding=1)
        out = self.initial_background_net(torch.cat([rainy, dual], dim=1))
        background, dual = out[:, :3], out[:, 3:]
        backgrounds = [background]

        # Stage 1 starts from M = 0, so the gradient step reduces to C^T applied to the
        # (soft-thresholded) rain residual O - B0.
        residual = F.relu(rainy - background - self.rain_threshold)
        maps = self.rain_map_nets[0](self.rain_gradient(residual, self.first_rain_kernels))
        rain = self.synthesize_rain(maps)
        background, dual = self.background_step(0, background, dual, rainy, rain)
        backgrounds.append(background)
        rain_layers = [rain]

        for stage in range(1, self.num_stages):
            # Gradient of ||O - B - C*M||^2 / 2 in M is C^T (C*M - (O - B)).
            gradient = self.rain_gradient(rain - (rainy - background), self.rain_kernels)
            step = self.rain_map_steps[stage - 1] * STEP_SCALE
            maps = self.rain_map_nets[stage](maps - step * gradient)
            rain = self.synthesize_rain(maps)
            background, dual = self.background_step(stage, background, dual, rainy, rain)
            backgrounds.append(background)
            rain_layers.append(rain)

        refined = self.refine_net(torch.cat([background, dual], dim=1))
        backgrounds.append(refined[:, :3])
        return RCDNetOutput(
            (b / self.rgb_range for b in backgrounds),
            (rain / self.rgb_range for rain in rain_layers),
        )
