"""What "float32" means inside the prior: exact IEEE float32, or TF32 on CUDA.

On Ampere and newer GPUs cuDNN runs float32 convolutions in TF32 (10-bit mantissa) by default,
so a "float32" prior is not exact there unless told. ``precision_scope`` sets torch's float32
precision knobs for the prior's forward AND its backward (which autograd runs later, outside
the prior's call), then restores the global settings:

- ``allow_tf32=False`` (the prior's default): IEEE float32 for CUDA matmuls, cuDNN
  convolutions and oneDNN (CPU) matmuls and convolutions, whatever the process set globally;
- ``allow_tf32=True``: TF32 for CUDA matmuls and cuDNN convolutions (oneDNN left as set).

The knobs are torch's per-backend ``fp32_precision`` settings (read and written with that API
only: mixing it with the legacy ``allow_tf32`` flags in one process can make
``torch.get_float32_matmul_precision`` raise). Restoring the values read before leaves the
global state exactly as it was.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch

__all__ = ["precision_knobs", "precision_scope", "precision_settings", "with_precision"]


def precision_knobs() -> dict[str, object]:
    """The per-backend ``fp32_precision`` objects, by name."""
    backends = torch.backends
    return {
        "cuda.matmul": backends.cuda.matmul,
        "cudnn.conv": backends.cudnn.conv,
        "mkldnn.matmul": backends.mkldnn.matmul,
        "mkldnn.conv": backends.mkldnn.conv,
    }


def precision_settings(allow_tf32: bool) -> dict[str, str]:
    """The knob values the prior runs under."""
    if allow_tf32:
        return {"cuda.matmul": "tf32", "cudnn.conv": "tf32"}
    return dict.fromkeys(precision_knobs(), "ieee")


@contextlib.contextmanager
def precision_scope(allow_tf32: bool) -> Iterator[None]:
    """Run the block with the prior's float32 precision; the previous values come back after."""
    knobs = precision_knobs()
    previous = {name: knobs[name].fp32_precision for name in precision_settings(allow_tf32)}
    try:
        _apply(precision_settings(allow_tf32))
        yield
    finally:
        _apply(previous)


def _apply(values: dict[str, str]) -> None:
    knobs = precision_knobs()
    for name, value in values.items():
        if knobs[name].fp32_precision != value:
            knobs[name].fp32_precision = value


class _BackwardScope:
    """The precision of backward passes through the prior. Several calls may be in flight in
    one backward (``num_draws`` > 1): the settings are saved when the first enters and restored
    when the last leaves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: dict[str, str] = {}

    def enter(self, allow_tf32: bool) -> None:
        with self.lock:
            if self.depth == 0:
                knobs = precision_knobs()
                self.saved = {name: knobs[name].fp32_precision for name in precision_knobs()}
            self.depth += 1
            _apply(precision_settings(allow_tf32))

    def leave(self) -> None:
        with self.lock:
            self.depth = max(0, self.depth - 1)
            if self.depth == 0:
                _apply(self.saved)


_BACKWARD = _BackwardScope()


class _EnterAtOutputs(torch.autograd.Function):
    """Identity in forward; in backward, sets the precision before the prior's backward runs."""

    @staticmethod
    def forward(ctx, allow_tf32: bool, *outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.allow_tf32 = allow_tf32
        return tuple(o.view_as(o) for o in outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        _BACKWARD.enter(ctx.allow_tf32)
        return (None, *grads)


class _LeaveAtInput(torch.autograd.Function):
    """Identity in forward; in backward, restores the precision once the input's gradient
    has been computed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        _BACKWARD.leave()
        return grad


def with_precision(
    run: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor, allow_tf32: bool
) -> tuple[torch.Tensor, ...]:
    """``run(x)`` under :func:`precision_scope`, and its backward too when ``x`` carries a
    graph (the outputs must depend on ``x``)."""
    track = torch.is_grad_enabled() and x.requires_grad
    with precision_scope(allow_tf32):
        if not track:
            return run(x)
        outputs = run(_LeaveAtInput.apply(x))
    return _EnterAtOutputs.apply(allow_tf32, *outputs)
