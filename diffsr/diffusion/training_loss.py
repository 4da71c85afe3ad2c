"""The DDPM training objective: noise-prediction MSE, plus the variational term for a UNet
that learns its variances (``learn_sigma``, Nichol & Dhariwal 2021 "hybrid" loss)."""

from __future__ import annotations

import math

import torch

from diffsr.diffusion.schedule import DiffusionSchedule

__all__ = ["ddpm_loss", "discretized_gaussian_nll", "normal_kl"]


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_nll(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """-log P(x) for 8-bit data in [-1, 1] under a Gaussian discretised to bins of width 2/255.

    The first and last bins extend to -inf and +inf. Exact normal CDF (upstream uses a tanh
    approximation, which differs by < 1e-3 in the CDF).
    """
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centred + 1.0 / 255.0))
    cdf_minus = torch.special.ndtr(inv_std * (centred - 1.0 / 255.0))
    tiny = 1e-12
    log_prob = torch.where(
        x < -0.999,
        torch.log(cdf_plus.clamp(min=tiny)),
        torch.where(
            x > 0.999,
            torch.log((1.0 - cdf_minus).clamp(min=tiny)),
            torch.log((cdf_plus - cdf_minus).clamp(min=tiny)),
        ),
    )
    return -log_prob


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


def ddpm_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    schedule: DiffusionSchedule,
) -> dict[str, torch.Tensor]:
    """Per-sample losses (B,): ``mse`` of the predicted noise and, for 6-channel outputs, the
    variational bound term ``vb`` (bits/dim, mean frozen so it only trains the variance,
    scaled by T/1000 as upstream); ``loss`` is their sum."""
    channels = x0.shape[1]
    eps = model_output[:, :channels]
    terms = {"mse": _mean_flat((eps - noise) ** 2)}
    if model_output.shape[1] == 2 * channels:
        frac = (model_output[:, channels:] + 1.0) / 2.0
        var = schedule.posterior_variance
        log_var_clipped = torch.log(torch.cat([var[1:2], var[1:]]))
        min_log = schedule.extract(log_var_clipped, t, x_t)
        max_log = schedule.extract(torch.log(schedule.betas), t, x_t)
        model_log_var = frac * max_log + (1.0 - frac) * min_log
        x0_hat = schedule.predict_x0(x_t, t, eps.detach())
        model_mean = schedule.posterior_mean(x0_hat, x_t, t)
        true_mean = schedule.posterior_mean(x0, x_t, t)
        true_log_var = schedule.extract(log_var_clipped, t, x_t)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(
            2.0
        )
        nll = _mean_flat(discretized_gaussian_nll(x0, model_mean, 0.5 * model_log_var)) / math.log(
            2.0
        )
        terms["vb"] = torch.where(t == 0, nll, kl) * (schedule.num_timesteps / 1000.0)
    terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
    return terms
