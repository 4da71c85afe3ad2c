"""GridDehazeNet: attention-based multi-scale network for image dehazing (ICCV 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffsr.archs.official_rename import authors_argument
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["GridDehazeNet", "ResidualDenseBlock"]


class ResidualDenseBlock(nn.Module):
    """Densely connected 3x3 conv + ReLU layers, a 1x1 fusion conv and a residual connection.

    Shapes: B x channels x H x W -> B x channels x H x W.
    """

    def __init__(self, channels: int, num_layers: int = 4, growth_rate: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(channels + i * growth_rate, growth_rate, 3, padding=1)
            for i in range(num_layers)
        )
        self.fuse = nn.Conv2d(channels + num_layers * growth_rate, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for layer in self.layers:
            features = torch.cat([features, F.relu(layer(features))], dim=1)
        return x + self.fuse(features)


class GridDownsample(nn.Sequential):
    """3x3 stride-2 conv + ReLU, then 3x3 conv doubling the channels + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
        )


class GridUpsample(nn.Module):
    """3x3 stride-2 transposed conv + ReLU (to an exact output size), 3x3 conv halving channels + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(channels, channels // 2, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.deconv(x, output_size=list(size)))
        return F.relu(self.conv(x))


@ARCH_REGISTRY.register(name="GateHazeNet")
@ARCH_REGISTRY.register()
class GridDehazeNet(nn.Module):
    """GridDehazeNet (Liu et al., "GridDehazeNet: Attention-Based Multi-Scale Network for Image
    Dehazing", ICCV 2019).

    Pre-processing (3x3 conv + residual dense block), a ``rows`` x ``columns`` grid of residual
    dense blocks, post-processing (residual dense block + 3x3 conv + ReLU). Row ``i`` has
    ``base_channels * 2**i`` channels. The first half of the columns carries stride-2
    downsampling connections from row ``i - 1`` to row ``i``, the second half upsampling
    connections from row ``i + 1`` to row ``i``. Where two streams meet they are mixed with
    learnable per-channel weights (initialised to 1): ``a * lateral + b * vertical``. The default
    configuration has 956,419 parameters (the released model has 958,051 because it stores a
    full rows x columns x 2 x max-channels weight tensor of which only 672 entries are used).

    Args:
        image_channels: channels of the input and output images.
        base_channels: channels of the first grid row.
        rows: grid rows (scales).
        columns: grid columns, even: ``columns // 2`` downsampling and as many upsampling ones.
        dense_layers: conv layers per residual dense block.
        growth_rate: channels added by each dense layer.
        attention: learn the junction weights (False keeps them fixed at 1).
        in_channels, depth_rate, height, width, num_dense_layer, kernel_size, stride: the
            authors' names (``GateHazeNet``, also a registry alias) for ``image_channels``,
            ``base_channels``, ``rows``, ``columns`` and ``dense_layers``; their
            ``kernel_size`` must be 3 and ``stride`` 2 (the only values the release builds
            consistently).

    Input: B x image_channels x H x W in [0, 1], any H, W (strided convs round up, transposed
    convs restore the exact sizes). Output: B x image_channels x H x W, the dehazed image,
    non-negative (final ReLU).
    """

    def __init__(
        self,
        image_channels: int = 3,
        base_channels: int = 16,
        rows: int = 3,
        columns: int = 6,
        dense_layers: int = 4,
        growth_rate: int = 16,
        attention: bool = True,
        in_channels: int | None = None,
        depth_rate: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_dense_layer: int | None = None,
        kernel_size: int = 3,
        stride: int = 2,
    ) -> None:
        super().__init__()
        if kernel_size != 3 or stride != 2:
            raise ValueError(
                f"GridDehazeNet: only kernel_size=3 and stride=2 are supported, got "
                f"kernel_size={kernel_size}, stride={stride}."
            )
        name = "GridDehazeNet"
        image_channels = authors_argument(
            name, ("image_channels", image_channels, 3), ("in_channels", in_channels)
        )
        base_channels = authors_argument(
            name, ("base_channels", base_channels, 16), ("depth_rate", depth_rate)
        )
        rows = authors_argument(name, ("rows", rows, 3), ("height", height))
        columns = authors_argument(name, ("columns", columns, 6), ("width", width))
        dense_layers = authors_argument(
            name, ("dense_layers", dense_layers, 4), ("num_dense_layer", num_dense_layer)
        )
        if rows < 1 or columns < 2 or columns % 2:
            raise ValueError(
                f"GridDehazeNet: need rows >= 1 and an even columns >= 2, got rows={rows}, "
                f"columns={columns}."
            )
        self.rows, self.columns = rows, columns
        half = columns // 2
        channels = [base_channels * 2**i for i in range(rows)]

        def rdb(c: int) -> ResidualDenseBlock:
            return ResidualDenseBlock(c, dense_layers, growth_rate)

        self.conv_in = nn.Conv2d(image_channels, base_channels, 3, padding=1)
        self.rdb_in = rdb(base_channels)
        # lateral[i][j] maps node (i, j) to node (i, j + 1)
        self.lateral = nn.ModuleList(
            nn.ModuleList(rdb(channels[i]) for _ in range(columns - 1)) for i in range(rows)
        )
        # down[i][j] maps node (i, j) to (i + 1, j) in the first half of the columns
        self.down = nn.ModuleList(
            nn.ModuleList(GridDownsample(channels[i]) for _ in range(half)) for i in range(rows - 1)
        )
        # up[i][j] maps node (i + 1, half + j) to (i, half + j) in the second half
        self.up = nn.ModuleList(
            nn.ModuleList(GridUpsample(channels[i + 1]) for _ in range(half))
            for i in range(rows - 1)
        )
        # junction weights (lateral, vertical) for every node fed by two streams
        self.junction_weights = nn.ParameterDict(
            {
                f"{i}_{j}": nn.Parameter(torch.ones(2, channels[i]), requires_grad=attention)
                for i in range(rows)
                for j in range(1, columns)
                if (j < half and i > 0) or (j >= half and i < rows - 1)
            }
        )
        self.rdb_out = rdb(base_channels)
        self.conv_out = nn.Conv2d(base_channels, image_channels, 3, padding=1)

    def mix(self, i: int, j: int, lateral: torch.Tensor, vertical: torch.Tensor) -> torch.Tensor:
        weights = self.junction_weights[f"{i}_{j}"][:, :, None, None]
        return weights[0] * lateral + weights[1] * vertical

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half, last_row = self.columns // 2, self.rows - 1
        grid: list[list[torch.Tensor | None]] = [[None] * self.columns for _ in range(self.rows)]

        grid[0][0] = self.rdb_in(self.conv_in(x))
        for i in range(1, self.rows):
            grid[i][0] = self.down[i - 1][0](grid[i - 1][0])
        # downsampling half: top to bottom in every column
        for j in range(1, half):
            for i in range(self.rows):
                lateral = self.lateral[i][j - 1](grid[i][j - 1])
                if i == 0:
                    grid[i][j] = lateral
                else:
                    grid[i][j] = self.mix(i, j, lateral, self.down[i - 1][j](grid[i - 1][j]))
        # upsampling half: bottom to top in every column
        for j in range(half, self.columns):
            for i in reversed(range(self.rows)):
                lateral = self.lateral[i][j - 1](grid[i][j - 1])
                if i == last_row:
                    grid[i][j] = lateral
                else:
                    vertical = self.up[i][j - half](grid[i + 1][j], lateral.shape[-2:])
                    grid[i][j] = self.mix(i, j, lateral, vertical)

        return F.relu(self.conv_out(self.rdb_out(grid[0][-1])))
