"""Pixel losses (L1, MSE, Charbonnier, SSIM) against float64 numpy formulas."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from diffsr.losses import LOSS_REGISTRY, build_loss
from diffsr.metrics import calculate_ssim_pt

ELEMENTWISE = {
    "L1Loss": lambda d: np.abs(d),
    "MSELoss": lambda d: d**2,
    "CharbonnierLoss": lambda d: np.sqrt(d**2 + 1e-12),
}


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_reductions_match_numpy(name, pair):
    pred, target = pair
    per_element = ELEMENTWISE[name](pred.double().numpy() - target.double().numpy())
    for reduction, expected in (("mean", per_element.mean()), ("sum", per_element.sum())):
        loss = build_loss({"type": name, "loss_weight": 0.5, "reduction": reduction})
        assert loss(pred, target).item() == pytest.approx(0.5 * expected, rel=1e-5)
    none = build_loss({"type": name, "reduction": "none"})(pred, target)
    assert none.shape == pred.shape
    np.testing.assert_allclose(none.double().numpy(), per_element, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_weighted_mean(name, pair):
    pred, target = pair
    weight = torch.rand(2, 1, 8, 8)
    per_element = ELEMENTWISE[name](pred.double().numpy() - target.double().numpy())
    w = np.broadcast_to(weight.double().numpy(), per_element.shape)
    loss = build_loss({"type": name})(pred, target, weight=weight)
    assert loss.item() == pytest.approx((w * per_element).sum() / w.sum(), rel=1e-5)
    zero = build_loss({"type": name})(pred, target, weight=torch.zeros(2, 1, 8, 8))
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="broadcast"):
        build_loss({"type": name})(pred, target, weight=torch.ones(2, 2, 8, 8))


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_gradient_and_errors(name, pair):
    pred, target = pair
    pred.requires_grad_(True)
    build_loss({"type": name})(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="none, mean, sum"):
        build_loss({"type": name, "reduction": "avg"})
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\) vs \(1, 3, 8, 8\)"):
        build_loss({"type": name})(pred, target[:1])


def test_charbonnier_eps_under_the_root():
    x = torch.zeros(1, 3, 4, 4)
    loss = build_loss({"type": "CharbonnierLoss", "eps": 1e-4})
    assert loss(x, x).item() == pytest.approx(1e-2)


def test_ssim_loss_is_one_minus_ssim():
    pred, target = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    target = (0.7 * pred + 0.3 * target).double()
    pred = pred.double().requires_grad_(True)
    loss = build_loss({"type": "SSIMLoss", "loss_weight": 2.0})(pred, target)
    expected = 1.0 - calculate_ssim_pt(pred.detach(), target).mean().item()
    assert loss.item() == pytest.approx(2.0 * expected, abs=1e-10)
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    skimage_ssim = np.mean(
        [
            structural_similarity(p, t, channel_axis=0, **options)
            for p, t in zip(pred.detach().numpy(), target.numpy())
        ]
    )
    assert loss.item() == pytest.approx(2.0 * (1.0 - skimage_ssim), abs=1e-10)
    loss.backward()
    assert pred.grad.abs().sum() > 0
    assert build_loss({"type": "SSIMLoss"})(target, target).item() == pytest.approx(0.0, abs=1e-12)
    per_pixel = build_loss({"type": "SSIMLoss", "reduction": "none"})(pred, target)
    assert per_pixel.shape == (2, 3, 14, 14)


def test_registered():
    for name in [*ELEMENTWISE, "SSIMLoss"]:
        assert name in LOSS_REGISTRY
