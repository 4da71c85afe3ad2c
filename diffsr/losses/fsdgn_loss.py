"""FSDGN's training loss: Charbonnier + Fourier amplitude L1 + Fourier phase L1, on every output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffsr.losses.loss_util import check_reduction, check_same_shape
from diffsr.utils.registry import LOSS_REGISTRY

__all__ = ["FSDGNLoss"]

FFT_NORMS = ("backward", "ortho", "forward")


def reduce_per_term(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """'mean' / 'sum' over all elements, 'none': mean per sample (shape B)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss.flatten(1).mean(dim=1)


@LOSS_REGISTRY.register()
class FSDGNLoss(nn.Module):
    """The loss of FSDGN (Yu et al., ECCV 2022), summed over all network outputs.

    For each output ``y`` of the network (both stages) and target ``x``, with
    ``F = rfft2(., norm=fft_norm)`` over H, W::

        charbonnier_weight * sqrt((y - x)^2 + eps)
        + amplitude_weight * |abs(F(y)) - abs(F(x))|
        + phase_weight * |angle(F(y)) - angle(F(x))|

    each term reduced over its own elements, then summed over outputs (times
    ``output_weights``) and multiplied by ``loss_weight``. The defaults follow the released FSDGN
    code: all term weights 1, ``eps`` 1e-12, un-normalised ('backward') FFT, plain (not wrapped)
    phase difference. With 'backward' the amplitude term grows with H x W (the DC coefficient
    is the sum of the image); use ``fft_norm='ortho'`` for a size-independent scale.

    ``multi_output = True``: ``pred`` is the list of network outputs (a single tensor is also
    accepted), each B x C x H x W like ``target``. The FFT terms are computed in float32 (or
    float64 for float64 inputs). ``reduction``: 'mean' (default) or 'sum' over elements, or
    'none' for a per-sample loss of shape B (each term averaged over the sample's elements).
    """

    multi_output = True

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        charbonnier_weight: float = 1.0,
        amplitude_weight: float = 1.0,
        phase_weight: float = 1.0,
        eps: float = 1e-12,
        fft_norm: str = "backward",
        output_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"FSDGNLoss: eps must be > 0, got {eps!r}.")
        if fft_norm not in FFT_NORMS:
            raise ValueError(f"FSDGNLoss: fft_norm must be one of {FFT_NORMS}, got {fft_norm!r}.")
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.charbonnier_weight = charbonnier_weight
        self.amplitude_weight = amplitude_weight
        self.phase_weight = phase_weight
        self.eps = eps
        self.fft_norm = fft_norm
        self.output_weights = None if output_weights is None else [float(w) for w in output_weights]

    def single_output_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The three weighted terms for one output, reduced as ``self.reduction`` says."""
        if pred.dtype != torch.float64 or target.dtype != torch.float64:
            pred, target = pred.float(), target.float()
        loss = self.charbonnier_weight * reduce_per_term(
            torch.sqrt((pred - target) ** 2 + self.eps), self.reduction
        )
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred_spectrum = torch.fft.rfft2(pred, norm=self.fft_norm)
            target_spectrum = torch.fft.rfft2(target, norm=self.fft_norm)
            if self.amplitude_weight:
                amplitude_error = (pred_spectrum.abs() - target_spectrum.abs()).abs()
                loss = loss + self.amplitude_weight * reduce_per_term(
                    amplitude_error, self.reduction
                )
            if self.phase_weight:
                phase_error = (pred_spectrum.angle() - target_spectrum.angle()).abs()
                loss = loss + self.phase_weight * reduce_per_term(phase_error, self.reduction)
        return loss

    def forward(
        self, pred: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        """``pred``: list of B x C x H x W outputs (or one tensor); ``target``: B x C x H x W."""
        outputs = [pred] if isinstance(pred, torch.Tensor) else list(pred)
        if not outputs:
            raise ValueError("FSDGNLoss: pred is an empty list; pass the network outputs.")
        weights = self.output_weights or [1.0] * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(
                f"FSDGNLoss: output_weights has {len(weights)} entries but the network returned "
                f"{len(outputs)} outputs; give one weight per output or leave it unset."
            )
        total = 0.0
        for index, (output, weight) in enumerate(zip(outputs, weights)):
            check_same_shape(output, target, f"FSDGNLoss (output {index})")
            total = total + weight * self.single_output_loss(output, target)
        return self.loss_weight * total

    def extra_repr(self) -> str:
        return (
            f"loss_weight={self.loss_weight}, reduction={self.reduction!r}, "
            f"charbonnier_weight={self.charbonnier_weight}, amplitude_weight="
            f"{self.amplitude_weight}, phase_weight={self.phase_weight}, eps={self.eps}, "
            f"fft_norm={self.fft_norm!r}, output_weights={self.output_weights}"
        )
