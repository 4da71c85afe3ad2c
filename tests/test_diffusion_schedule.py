"""Noise schedules and closed-form diffusion quantities against guided-diffusion's numbers and
float64 formulas."""

import math
import warnings

import numpy as np
import pytest
import torch

from diffsr.diffusion import DiffusionSchedule, make_betas

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")

CASES = [("linear", 1000), ("cosine", 1000), ("linear", 250), ("cosine", 40)]


def reference(name: str, steps: int):
    return gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule(name, steps),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )


@pytest.mark.parametrize(("name", "steps"), CASES)
def test_schedule_tensors_equal_guided_diffusion(name, steps):
    ours, ref = DiffusionSchedule(name, steps), reference(name, steps)
    assert ours.num_timesteps == ref.num_timesteps == steps
    for attr in (
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    ):
        value = getattr(ours, attr)
        assert value.dtype == torch.float64, attr
        np.testing.assert_allclose(
            value.numpy(), getattr(ref, attr), rtol=1e-12, atol=0, err_msg=attr
        )


def test_linear_schedule_endpoints_and_scaling():
    betas = make_betas("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    short = make_betas("linear", 100)  # scaled by 1000 / T
    assert short[0].item() == pytest.approx(1e-3) and short[-1].item() == pytest.approx(0.2)


def test_alphas_cumprod_by_explicit_product():
    schedule = DiffusionSchedule("cosine", 50)
    product, expected = 1.0, []
    for i in range(50):
        t1, t2 = i / 50, (i + 1) / 50
        f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        product *= 1.0 - min(1.0 - f(t2) / f(t1), 0.999)
        expected.append(product)
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(("name", "steps"), CASES[:3])
def test_q_sample_x0_and_posterior_mean_equal_guided_diffusion(name, steps):
    ours, ref = DiffusionSchedule(name, steps), reference(name, steps)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(3, 3, 8, 8, generator=gen)
    eps = torch.randn(3, 3, 8, 8, generator=gen)
    t = torch.tensor([0, steps // 2, steps - 1])

    x_t = ours.q_sample(x0, t, noise)
    torch.testing.assert_close(x_t, ref.q_sample(x0, t, noise=noise), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        ours.predict_x0(x_t, t, eps),
        ref._predict_xstart_from_eps(x_t, t, eps),
        rtol=1e-6,
        atol=1e-5,
    )
    ref_mean, _, _ = ref.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(ours.posterior_mean(x0, x_t, t), ref_mean, rtol=1e-6, atol=1e-6)


def test_x0_round_trip_in_float64():
    schedule = DiffusionSchedule("linear", 1000)
    x0 = torch.rand(4, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 500, 999])
    x_t = schedule.q_sample(x0, t, noise)
    torch.testing.assert_close(schedule.predict_x0(x_t, t, noise), x0, rtol=0, atol=1e-9)
    # With the true x0, the posterior mean at t = 0 is x0 itself (abar_{-1} = 1).
    torch.testing.assert_close(schedule.posterior_mean(x0, x_t, t)[:1], x0[:1], rtol=0, atol=1e-12)


def test_schedule_stays_float64_and_follows_the_data_dtype():
    schedule = DiffusionSchedule("linear", 1000).to(torch.float32)
    assert schedule.betas.dtype == torch.float64
    x0 = torch.zeros(2, 3, 4, 4, dtype=torch.bfloat16)
    assert schedule.q_sample(x0, torch.tensor([1, 2]), torch.ones_like(x0)).dtype == torch.bfloat16


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown noise_schedule 'quadratic'"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="t must have shape"):
        DiffusionSchedule().q_sample(
            torch.zeros(2, 3, 4, 4), torch.tensor([1]), torch.zeros(2, 3, 4, 4)
        )
