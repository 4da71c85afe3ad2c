"""PReNet: progressive recurrent deraining network.

Ren, Zuo, Hu, Zhu, Meng, "Progressive Image Deraining Networks: A Better and Simpler Baseline",
CVPR 2019.

The same small network is applied ``num_stages`` times. Each stage sees the rainy image
concatenated with the previous estimate, updates a convolutional LSTM state and predicts a
residual through a stack of residual blocks. All stages share their weights.

With the released weights (csdwren/PReNet, class ``PReNet``) it computes the released
function; its constructor arguments ``recurrent_iter`` and ``use_GPU`` are accepted.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["PReNet"]


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ResidualBlock(nn.Module):
    """``relu(x + relu(conv(relu(conv(x)))))``, as in PReNet."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM with one 3x3 convolution per gate on ``[input, hidden]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input_gate = conv3x3(2 * channels, channels)
        self.forget_gate = conv3x3(2 * channels, channels)
        self.cell_candidate = conv3x3(2 * channels, channels)
        self.output_gate = conv3x3(2 * channels, channels)

    def forward(
        self, x: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([x, hidden], dim=1)
        i = torch.sigmoid(self.input_gate(joint))
        f = torch.sigmoid(self.forget_gate(joint))
        g = torch.tanh(self.cell_candidate(joint))
        o = torch.sigmoid(self.output_gate(joint))
        cell = f * cell + i * g
        hidden = o * torch.tanh(cell)
        return hidden, cell


@ARCH_REGISTRY.register()
class PReNet(nn.Module):
    """Progressive recurrent network for single-image rain removal.

    Args:
        num_stages: recursive stages (paper: 6). All stages share the weights.
        num_channels: feature width (paper: 32).
        num_res_blocks: residual blocks per stage (paper: 5).
        recurrent_iter: the released code's name for ``num_stages``.
        use_GPU: the released code's device switch for its LSTM state, accepted and not
            needed (the state is created on the input's device).

    Input: rainy image ``B x 3 x H x W`` in [0, 1], any size.
    Output: list of ``num_stages`` estimates ``B x 3 x H x W`` (roughly [0, 1], not clamped),
    the final derained image last. The default configuration has 168,963 parameters.
    """

    def __init__(
        self,
        num_stages: int = 6,
        num_channels: int = 32,
        num_res_blocks: int = 5,
        *,
        recurrent_iter: int | None = None,
        use_GPU: bool = True,
    ) -> None:
        super().__init__()
        del use_GPU  # the device follows the input
        if recurrent_iter is not None:
            if num_stages not in (6, recurrent_iter):
                raise ValueError(
                    f"PReNet: recurrent_iter={recurrent_iter} (the released code's name) "
                    f"contradicts num_stages={num_stages}; give one of the two."
                )
            num_stages = recurrent_iter
        if num_stages < 1:
            raise ValueError(f"PReNet: num_stages must be >= 1, got {num_stages}.")
        self.num_stages = num_stages
        self.num_channels = num_channels
        self.head = nn.Sequential(conv3x3(6, num_channels), nn.ReLU(inplace=True))
        self.recurrent = ConvLSTMCell(num_channels)
        self.res_blocks = nn.Sequential(
            *(ResidualBlock(num_channels) for _ in range(num_res_blocks))
        )
        self.tail = conv3x3(num_channels, 3)

    def forward(self, rainy: torch.Tensor) -> list[torch.Tensor]:
        b, _, h, w = rainy.shape
        hidden = rainy.new_zeros(b, self.num_channels, h, w)
        cell = torch.zeros_like(hidden)
        estimate = rainy
        outputs = []
        for _ in range(self.num_stages):
            features = self.head(torch.cat([rainy, estimate], dim=1))
            hidden, cell = self.recurrent(features, hidden, cell)
            estimate = rainy + self.tail(self.res_blocks(hidden))
            outputs.append(estimate)
        return outputs
