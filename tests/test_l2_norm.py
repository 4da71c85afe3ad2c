"""The paper's norm: DiffLoss ``criterion: l2`` (Eq. 11/14) and the L2NormLoss pixel term (Eq. 16),
against formulas written out here, gradient checks, and the gamma transfer of docs/diffloss.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffsr.losses import LOSS_REGISTRY
from tests.helpers.fixtures import TINY_PRIOR

PRIOR = TINY_PRIOR


pytestmark = pytest.mark.usefixtures("fresh_prior_cache")


def pair(batch: int = 2, size: int = 8, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    clean = torch.rand(batch, 3, size, size, generator=gen, dtype=dtype)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=gen, dtype=dtype)).clamp(0, 1)
    return noisy, clean


def test_l2_norm_loss_is_the_per_sample_euclidean_norm():
    pred, target = pair()
    weight = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d, w = (pred - target).numpy(), weight.numpy()
    per_sample = np.sqrt((d**2).reshape(2, -1).sum(axis=1))
    weighted = np.sqrt((w * d**2).reshape(2, -1).sum(axis=1))
    build = LOSS_REGISTRY.build
    assert build({"type": "L2NormLoss", "loss_weight": 0.5})(pred, target).item() == pytest.approx(
        0.5 * per_sample.mean(), rel=1e-12
    )
    summed = build({"type": "L2NormLoss", "reduction": "sum"})(pred, target)
    assert summed.item() == pytest.approx(per_sample.sum(), rel=1e-12)
    none = build({"type": "L2NormLoss", "reduction": "none"})(pred, target, weight)
    np.testing.assert_allclose(none.numpy(), weighted, rtol=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        build({"type": "L2NormLoss"})(pred, target[:1])


def test_l2_norm_loss_gradient():
    loss = LOSS_REGISTRY.build({"type": "L2NormLoss"})
    pred, target = pair()
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred.requires_grad_(),))
    # d||d||/dd = d / ||d||: unit norm per sample, whatever the error's size
    pred = pred.detach().requires_grad_()
    loss(pred, target).backward()
    norms = pred.grad.flatten(1).norm(dim=1)
    np.testing.assert_allclose(norms.numpy(), [0.5, 0.5], rtol=1e-12)  # mean over a batch of 2
    same = target.clone().requires_grad_()
    loss(same, target).backward()
    assert torch.equal(same.grad, torch.zeros_like(same))  # zero, not NaN, at no error


def make(loss_type: str, **options):
    return LOSS_REGISTRY.build({"type": loss_type, "prior": PRIOR, **options})


def test_criterion_l2_is_the_norm_of_what_mse_averages():
    restored, clean = pair(size=16, dtype=torch.float32)
    mse = make("NaturalnessLoss", reduction="none", seed=2)
    l2 = make("NaturalnessLoss", reduction="none", seed=2, criterion="l2")
    n = 3 * 16 * 16  # elements of eps per sample
    want = (mse(restored, clean).double() * n).sqrt()
    np.testing.assert_allclose(l2(restored, clean).double().numpy(), want.numpy(), rtol=1e-5)


def test_criterion_l2_gradient_in_float64():
    loss = make("DiffLoss", criterion="l2", lambda_sem=0.3)
    loss.prior.double()
    restored, clean = pair(batch=1)

    def seeded(pred):
        loss.set_seed(5)  # the same t and noise in every evaluation
        return loss(pred, clean)

    assert torch.autograd.gradcheck(
        seeded, (restored.requires_grad_(),), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True
    )


def test_gamma_transfer_between_mse_and_l2_gives_the_same_gradient():
    """docs/diffloss.md: gamma_l2 = 2 gamma_mse sqrt(L_mse / N) gives one sample the same
    gradient, since d(||d||)/dz = d/||d|| and d(||d||^2/N)/dz = 2d/N."""
    restored, clean = pair(batch=1, size=16, dtype=torch.float32)
    gamma_mse, n = 1e-3, 3 * 16 * 16
    mse = make("NaturalnessLoss", seed=4, loss_weight=gamma_mse)
    pred = restored.clone().requires_grad_()
    value = mse(pred, clean)
    value.backward()
    gamma_l2 = 2 * gamma_mse * math.sqrt(value.item() / gamma_mse / n)
    l2 = make("NaturalnessLoss", seed=4, loss_weight=gamma_l2, criterion="l2")
    pred_l2 = restored.clone().requires_grad_()
    l2(pred_l2, clean).backward()
    torch.testing.assert_close(pred_l2.grad, pred.grad, rtol=1e-4, atol=1e-12)
