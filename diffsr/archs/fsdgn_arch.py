"""FSDGN: Frequency and Spatial Dual Guidance Network for image dehazing (ECCV 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffsr.archs.arch_util import DenseFeatureFusion, crop_back, pad_to_multiple
from diffsr.archs.official_rename import authors_argument
from diffsr.utils.registry import ARCH_REGISTRY

__all__ = ["FSDGN", "SpatialFrequencyBlock"]


class ResidualConvBlock(nn.Module):
    """Two 3x3 conv + LeakyReLU(0.2) layers with a 1x1 convolution on the shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class SpatialFrequencyBlock(nn.Module):
    """A 3x3 convolution plus a Fourier branch in which the amplitude guides the phase.

    Fourier branch: ``rfft2`` -> amplitude A and phase P; A' = 1x1 conv(A); the amplitude
    change ``A' - A``, average-pooled and softmax-normalised over channels, reweights P;
    P' = P + (1x1 -> ReLU -> 1x1)(P * weights); recombine ``A' exp(i P')`` and ``irfft2``.
    The Fourier branch runs in float32 (float64 for float64 input) with autocast disabled.

    Shapes: B x C x H x W -> B x C x H x W.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(channels, channels, 3, padding=1)
        self.amplitude = nn.Conv2d(channels, channels, 1)
        self.phase = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def fourier_branch(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            if x.dtype not in (torch.float32, torch.float64):
                x = x.float()
            spectrum = torch.fft.rfft2(x, norm="backward")
            amplitude, phase = spectrum.abs(), spectrum.angle()
            new_amplitude = self.amplitude(amplitude)
            channel_weights = F.adaptive_avg_pool2d(new_amplitude - amplitude, 1).softmax(dim=1)
            new_phase = phase + self.phase(phase * channel_weights)
            spectrum = torch.polar(new_amplitude, new_phase)
            return torch.fft.irfft2(spectrum, s=(height, width), norm="backward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial(x)
        return spatial + self.fourier_branch(x).to(spatial.dtype)


class DownBlock(nn.Sequential):
    """4x4 stride-2 convolution + ReLU: halves H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.ReLU())


class UpBlock(nn.Module):
    """2x2 stride-2 transposed conv, concatenation with the skip, 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.merge = nn.Sequential(
            nn.Conv2d(2 * out_channels, out_channels, 3, padding=1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([self.up(x), skip], dim=1))


class SupervisedAttention(nn.Module):
    """Supervised attention module between stages (as in MPRNet), 1x1 convs without bias.

    Returns the attended features (B x C x H x W) and the stage image ``conv(x) + image``.
    """

    def __init__(self, channels: int, image_channels: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(channels, channels, 1, bias=False)
        self.to_image = nn.Conv2d(channels, image_channels, 1, bias=False)
        self.from_image = nn.Conv2d(image_channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        restored = self.to_image(x) + image
        attention = torch.sigmoid(self.from_image(restored))
        return self.features(x) * attention + x, restored


class DualFusionUNet(nn.Module):
    """One FSDGN stage: a U-Net with dense feature fusion on both the encoder and decoder side.

    Every level has a ``ResidualConvBlock`` (followed by a ``SpatialFrequencyBlock`` when
    ``use_frequency``); an encoder level is ``down -> fuse with finer encoder levels -> block``,
    a decoder level ``up + skip -> block -> fuse with coarser decoder levels``.
    """

    def __init__(self, widths: Sequence[int], use_frequency: bool) -> None:
        super().__init__()
        self.depth = len(widths)
        inner = range(1, self.depth)

        def level_block(channels: int) -> nn.Module:
            if use_frequency:
                return nn.Sequential(ResidualConvBlock(channels), SpatialFrequencyBlock(channels))
            return ResidualConvBlock(channels)

        self.down = nn.ModuleList(DownBlock(widths[k - 1], widths[k]) for k in inner)
        self.encoder_fusion = nn.ModuleList(
            DenseFeatureFusion(widths[k::-1], towards="finer") for k in inner
        )
        self.encoder_blocks = nn.ModuleList(level_block(w) for w in widths)
        # decoder modules are indexed by the level they produce, finest first
        self.up = nn.ModuleList(UpBlock(widths[k], widths[k - 1]) for k in inner)
        self.decoder_blocks = nn.ModuleList(level_block(w) for w in widths[:-1])
        self.decoder_fusion = nn.ModuleList(
            DenseFeatureFusion(widths[k:], towards="coarser") for k in range(self.depth - 1)
        )

    def forward(
        self, feature: torch.Tensor, cross_stage: Sequence[torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the stage on B x widths[0] x H x W features (H, W multiples of 2**(depth-1)).

        ``cross_stage`` (one tensor per level but the coarsest) is added to the encoder
        features. Returns the encoder and decoder features, finest level first (the decoder
        list has no entry for the coarsest level).
        """
        encoder: list[torch.Tensor] = []
        for k in range(self.depth):
            if k > 0:
                feature = self.down[k - 1](encoder[-1])
                feature = self.encoder_fusion[k - 1](feature, encoder)
            feature = self.encoder_blocks[k](feature)
            if cross_stage is not None and k < self.depth - 1:
                feature = feature + cross_stage[k]
            encoder.append(feature)

        decoded = [encoder[-1]]  # coarsest first, as the decoder fusion expects
        for k in reversed(range(self.depth - 1)):
            feature = self.up[k](decoded[-1], encoder[k])
            feature = self.decoder_blocks[k](feature)
            feature = self.decoder_fusion[k](feature, decoded)
            decoded.append(feature)
        return encoder[:-1], decoded[:0:-1]


@ARCH_REGISTRY.register(name="fusion_net")
@ARCH_REGISTRY.register()
class FSDGN(nn.Module):
    """FSDGN dehazing network (Yu et al., "Frequency and Spatial Dual Guidance for Image
    Dehazing", ECCV 2022).

    Two U-Net stages with MSBDN-style dense feature fusion (back-projection) on the encoder and
    decoder sides. Stage 1 follows every residual block with a ``SpatialFrequencyBlock``
    (amplitude-guided phase refinement in the Fourier domain) and ends in a supervised attention
    module producing the stage-1 image. Stage 2 starts from ``conv3x3(cat(conv3x3(input),
    attended features))``, adds 1x1-conv projections of the stage-1 encoder and decoder features
    to its encoder levels, and ends in a 1x1 conv. The default configuration has 2,731,283
    parameters.

    Args:
        image_channels: channels of the input and output images.
        widths: channels per level, finest first (the paper: 16/20/28/44/76).
        clamp_output: clamp both outputs to [0, 1] as the released model does (the clamp
            stops gradients for out-of-range pixels; set False to train without it).
        num_in_ch, base_channel, up_mode, bias: the authors' arguments (``FSDGN`` in their
            ``FSDGN_arch.py``; ``fusion_net`` in their earlier option files is a registry
            alias): ``num_in_ch`` is ``image_channels``, ``base_channel`` is ``widths[0]``,
            ``up_mode`` must be ``'upconv'`` (their ``'upsample'`` branch does not build) and
            ``bias`` adds biases to the cross-stage 1x1 convolutions (default False).

    Input: B x image_channels x H x W in [0, 1], any H, W (reflect-padded internally to a
    multiple of ``2**(len(widths) - 1)`` and cropped back).
    Output: list ``[stage1, stage2]`` of B x image_channels x H x W images, the final
    (stage-2) image last; in [0, 1] when ``clamp_output``.
    """

    def __init__(
        self,
        image_channels: int = 3,
        widths: Sequence[int] = (16, 20, 28, 44, 76),
        clamp_output: bool = True,
        num_in_ch: int | None = None,
        base_channel: int | None = None,
        up_mode: str = "upconv",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if up_mode != "upconv":
            raise ValueError(f"FSDGN: up_mode must be 'upconv' (as released), got {up_mode!r}.")
        image_channels = authors_argument(
            "FSDGN", ("image_channels", image_channels, 3), ("num_in_ch", num_in_ch)
        )
        widths = [int(w) for w in widths]
        if base_channel is not None:
            widths[0] = int(base_channel)
        if len(widths) < 2:
            raise ValueError(f"FSDGN: widths needs at least two levels, got {widths}.")
        self.pad_multiple = 2 ** (len(widths) - 1)
        self.clamp_output = clamp_output
        base = widths[0]

        self.stage1_head = nn.Conv2d(image_channels, base, 3, padding=1)
        self.stage1 = DualFusionUNet(widths, use_frequency=True)
        self.attention = SupervisedAttention(base, image_channels)

        self.stage2_head = nn.Conv2d(image_channels, base, 3, padding=1)
        self.stage2_merge = nn.Conv2d(2 * base, base, 3, padding=1, bias=False)
        self.cross_encoder = nn.ModuleList(nn.Conv2d(w, w, 1, bias=bias) for w in widths[:-1])
        self.cross_decoder = nn.ModuleList(nn.Conv2d(w, w, 1, bias=bias) for w in widths[:-1])
        self.stage2 = DualFusionUNet(widths, use_frequency=False)
        self.stage2_tail = nn.Conv2d(base, image_channels, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, size = pad_to_multiple(x, self.pad_multiple)

        encoder1, decoder1 = self.stage1(self.stage1_head(x))
        attended, stage1_image = self.attention(decoder1[0], x)

        feature = self.stage2_merge(torch.cat([self.stage2_head(x), attended], dim=1))
        cross_stage = [
            project_enc(enc) + project_dec(dec)
            for project_enc, project_dec, enc, dec in zip(
                self.cross_encoder, self.cross_decoder, encoder1, decoder1
            )
        ]
        _, decoder2 = self.stage2(feature, cross_stage)
        stage2_image = self.stage2_tail(decoder2[0])

        outputs = [crop_back(img, size) for img in (stage1_image, stage2_image)]
        if self.clamp_output:
            outputs = [img.clamp(0, 1) for img in outputs]
        return outputs
