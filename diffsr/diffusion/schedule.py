"""The Gaussian diffusion process q(x_t | x_0) of DDPM/ADM: beta schedules and the closed-form
quantities DiffLoss needs (forward diffusion, x0 from eps, posterior mean of x_{t-1}).

All schedule tensors are float64 (like guided-diffusion's numpy arrays); per-sample coefficients
are gathered in float64 and cast to the data's dtype just before use.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NOISE_SCHEDULES", "DiffusionSchedule", "make_betas"]

NOISE_SCHEDULES = ("linear", "cosine")


def make_betas(name: str, num_timesteps: int) -> torch.Tensor:
    """Beta schedule as a (T,) float64 tensor.

    ``linear``: Ho et al.'s linspace(1e-4, 0.02) for T = 1000, both ends scaled by 1000 / T so
    that other T give a similar process. ``cosine``: Nichol & Dhariwal's
    abar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), betas_t = 1 - abar((t+1)/T) / abar(t/T),
    clipped at 0.999.
    """
    if num_timesteps < 1:
        raise ValueError(f"diffusion_steps must be >= 1, got {num_timesteps}.")
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "cosine":

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
            for i in range(num_timesteps)
        ]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(f"Unknown noise_schedule {name!r}; use one of {', '.join(NOISE_SCHEDULES)}.")


class DiffusionSchedule(nn.Module):
    """Closed-form quantities of a discrete Gaussian diffusion with T steps (t = 0 .. T-1).

    Tensors (all (T,) float64, moved with ``.to(device)`` but never cast): ``betas``,
    ``alphas_cumprod`` (abar_t), ``alphas_cumprod_prev``, ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``sqrt_recip_alphas_cumprod`` (1 / sqrt(abar_t)),
    ``sqrt_recipm1_alphas_cumprod`` (sqrt(1 / abar_t - 1)), ``posterior_variance``, ``posterior_mean_coef1``
    (multiplies x0), ``posterior_mean_coef2`` (multiplies x_t).
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    def __init__(self, noise_schedule: str = "linear", diffusion_steps: int = 1000) -> None:
        super().__init__()
        self.noise_schedule = noise_schedule
        betas = make_betas(noise_schedule, diffusion_steps)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        tensors = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": abar.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            "posterior_variance": betas * (1.0 - abar_prev) / (1.0 - abar),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        }
        for name, value in tensors.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    def _apply(self, fn, recurse=True):  # keep float64 through .to(dtype) / .half() calls
        super()._apply(fn, recurse)
        for name, buffer in self._buffers.items():
            if buffer is not None and buffer.dtype != torch.float64:
                self._buffers[name] = buffer.double()
        return self

    def extract(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values[t]`` as (B, 1, ..., 1) in ``like``'s dtype and device."""
        if t.dim() != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"t must have shape (B,) = ({like.shape[0]},); got {tuple(t.shape)}.")
        picked = values.to(t.device)[t.long()].to(device=like.device, dtype=like.dtype)
        return picked.reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Eq. 7). x0, noise: (B, C, H, W)."""
        if noise.shape != x0.shape:
            raise ValueError(
                f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}."
            )
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Eq. 8-10).

        Computed as x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps with float64 coefficients.
        """
        return (
            self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0) = coef1_t x0 + coef2_t x_t (Eq. 3-5)."""
        return (
            self.extract(self.posterior_mean_coef1, t, x_t) * x0
            + self.extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
