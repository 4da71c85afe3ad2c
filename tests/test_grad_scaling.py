"""Gradient scaling through a float16 prior (diffsr.diffusion.grad_scaling).

References are float32 (or float64) gradients of the same functions computed without scaling.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from diffsr.diffusion import DiffusionPrior
from diffsr.diffusion.grad_scaling import GradScaling, scaled_backward
from tests.helpers.fixtures import TINY_PRIOR_UNET


def _two_outputs(weight: torch.Tensor, seen: list[float] | None = None):
    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inner = torch.tanh(x @ weight)
        if seen is not None:  # the gradient inside run, after the scaling at the outputs
            inner.register_hook(lambda g: seen.append(g.abs().max().item()))
        return inner * 1.0, x.sin()

    return run


def test_float32_gradients_are_bit_identical_and_the_scale_is_a_power_of_two():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=gen, requires_grad=True)
    weight = torch.randn(8, 8, generator=gen)
    a, b = _two_outputs(weight)(x)
    # Tiny gradients at the outputs, as DiffLoss sends them (the largest is 3e-7 * 2 |sin|).
    expected = torch.autograd.grad(1e-7 * (a.sum() + 3 * b.square().sum()), x)[0]

    seen: list[float] = []
    a, b = scaled_backward(_two_outputs(weight, seen), x, GradScaling())
    scaled = torch.autograd.grad(1e-7 * (a.sum() + 3 * b.square().sum()), x)[0]
    # Multiplying by a power of two and dividing by it again changes no bit in float32.
    assert torch.equal(scaled, expected)
    # Inside, the gradient was scaled so that the largest incoming one lies in (0.5, 1]: the
    # a-branch receives 1e-7 * S, with S = 2 ** -ceil(log2(largest)).
    largest = 6e-7 * b.detach().abs().max().item()
    scale = 2.0 ** -math.ceil(math.log2(largest))
    assert 0.5 < largest * scale <= 1.0
    assert seen == [pytest.approx(1e-7 * scale, rel=1e-6)]


def test_each_call_keeps_its_own_scale():
    # Two calls before one backward (DiffLoss with num_draws > 1), their gradients 1e8 apart:
    # each call's input gradient is unscaled by the power of two chosen at its own outputs.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, generator=gen, requires_grad=True)
    weight = torch.randn(8, 8, generator=gen)
    run = _two_outputs(weight)

    def objective(first, second):
        return 1e-6 * sum(o.sum() for o in first) + 1e2 * sum(o.sum() for o in second)

    expected = torch.autograd.grad(objective(run(x), run(x)), x)[0]
    scaling = GradScaling()
    first, second = scaled_backward(run, x, scaling), scaled_backward(run, x, scaling)
    scaled = torch.autograd.grad(objective(first, second), x)[0]
    torch.testing.assert_close(scaled, expected, rtol=1e-6, atol=0)


def test_float16_overflow_gives_zero_gradient_a_warning_and_a_lower_target(caplog):
    def run(x: torch.Tensor) -> tuple[torch.Tensor]:
        # Values stay small in forward; the backward multiplies the gradient by 9e4 in float16.
        return (((x.half() * 300) * 300).float(),)

    x = torch.full((2, 4), 1e-6, requires_grad=True)
    scaling = GradScaling()
    with caplog.at_level(logging.WARNING, logger="diffsr.diffusion.grad_scaling"):
        (out,) = scaled_backward(run, x, scaling)
        grad = torch.autograd.grad(out.sum(), x)[0]
    assert torch.equal(grad, torch.zeros_like(x))
    assert scaling.overflows == 1 and scaling.target_exponent == -4
    assert "overflowed" in caplog.text

    # With the lowered target the same backward fits float16 and is right.
    (out,) = scaled_backward(run, x, scaling)
    grad = torch.autograd.grad(out.sum(), x)[0]
    assert torch.allclose(grad, torch.full_like(x, 9e4), rtol=1e-3)
    assert scaling.overflows == 1


def test_a_non_finite_gradient_from_upstream_passes_through_untouched():
    # The trainer's GradScaler must see its own overflow: it is not zeroed or counted here.
    x = torch.ones(2, 3, requires_grad=True)
    scaling = GradScaling()
    (out,) = scaled_backward(lambda v: (v * 2.0,), x, scaling)
    upstream = torch.tensor([[1.0, float("inf"), 1.0], [1.0, 1.0, 1.0]])
    grad = torch.autograd.grad(out, x, grad_outputs=upstream)[0]
    assert torch.isinf(grad[0, 1]) and grad[0, 0] == 2.0
    assert scaling.overflows == 0 and scaling.target_exponent == 0


def _input_grad(prior: DiffusionPrior, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    xi = x.clone().requires_grad_()
    eps, h = prior(xi, t, need_h=True)
    # A DiffLoss-sized objective: a mean over every element, times gamma = 1e-3.
    loss = 1e-3 * ((eps - 0.1).square().mean() + 0.01 * h.square().mean())
    return torch.autograd.grad(loss, xi)[0].double()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_float16_prior_gradient_is_much_closer_to_float32_with_scaling():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    t = torch.tensor([10, 700])
    reference = _input_grad(DiffusionPrior(unet=TINY_PRIOR_UNET), x, t)

    def error(**options) -> float:
        grad = _input_grad(DiffusionPrior(unet=TINY_PRIOR_UNET, dtype="float16", **options), x, t)
        return ((grad - reference).norm() / reference.norm()).item()

    scaled, unscaled = error(), error(fp16_grad_scaling=False)
    assert scaled < 0.02
    assert unscaled > 3 * scaled
