"""The computation shared by DiffLoss, NaturalnessLoss and SemanticLoss.

Given restored ``z`` and clean ``x`` images in [0, 1] (method.md, Eq. 7-16):

1. map both to [-1, 1] and fit them to the prior (same crop / resize / pad for both);
2. draw t (uniform in ``t_range``) and noise per sample, shared by both branches by default,
   from the loss's own ``torch.Generator`` (option ``seed``), never from the global RNG;
3. diffuse both, run the frozen UNet once per branch: the clean branch without autograd, the
   restored branch with gradients flowing through the frozen weights into ``z``;
4. compare in the chosen ``space`` (eps, x0 or xprev) for L_nat and in h-space for L_sem;
5. weight each sample by w(t) and combine: ``nat_weight * L_nat + sem_weight * L_sem``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffsr.diffusion import (
    DiffusionPrior,
    default_channels_last,
    get_shared_prior,
    release_shared_prior,
)

__all__ = ["CRITERIA", "FIT_MODES", "SPACES", "WEIGHTINGS", "PriorLoss", "PriorLossCore"]

logger = logging.getLogger("diffsr")

CRITERIA = ("mse", "l2", "l1", "charbonnier")
SPACES = ("eps", "x0", "xprev")
WEIGHTINGS = ("none", "snr", "min_snr", "sqrt_abar")
FIT_MODES = ("crop", "resize", "pad")
INPUT_RANGES = ("0_1", "-1_1")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} is {value!r}; choose one of {', '.join(allowed)}.")


def per_sample_distance(a: torch.Tensor, b: torch.Tensor, criterion: str) -> torch.Tensor:
    """Distance per sample, (B,), between ``a`` and ``b`` (B, ...).

    ``mse``: mean of squares (what the authors' released code computes); ``l2``: the Euclidean
    norm ||a - b||_2 over all but the batch dimension (the paper's Eq. 11/14); ``l1`` and
    ``charbonnier``: means of |d| and sqrt(d^2 + 1e-6).
    """
    diff = a - b
    if criterion == "l2":
        return torch.linalg.vector_norm(diff.flatten(1), dim=1)
    if criterion == "mse":
        value = diff.square()
    elif criterion == "l1":
        value = diff.abs()
    else:
        value = torch.sqrt(diff.square() + 1e-6)
    return value.flatten(1).mean(dim=1)


def prior_options_on(prior: dict[str, Any], device: str | torch.device | None) -> dict[str, Any]:
    """DiffLoss's prior options on ``device``: channels_last defaults to the device's best
    layout (:func:`diffsr.diffusion.default_channels_last`); an explicit value wins."""
    return {"channels_last": default_channels_last(device), **prior}


class PriorLossCore(nn.Module):
    """Naturalness (noise/x0/xprev space) and semantic (h-space) distances under a frozen prior.

    The prior is shared between every loss with the same ``prior`` options on the same device
    (see :func:`diffsr.diffusion.get_shared_prior`) and is deliberately not a submodule: it is
    never in a ``state_dict``, ``parameters()``, an optimizer or an EMA.
    """

    def __init__(
        self,
        prior: dict[str, Any],
        nat_weight: float,
        sem_weight: float,
        criterion: str = "mse",
        space: str = "eps",
        t_range: list[int] | None = None,
        t_weighting: str = "none",
        snr_gamma: float = 5.0,
        shared_noise: bool = True,
        num_draws: int = 1,
        input_range: str = "0_1",
        fit: str = "crop",
        device: str | torch.device | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _choice("criterion", criterion, CRITERIA)
        _choice("space", space, SPACES)
        _choice("t_weighting", t_weighting, WEIGHTINGS)
        _choice("input_range", input_range, INPUT_RANGES)
        _choice("fit", fit, FIT_MODES)
        if num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}.")
        if not isinstance(prior, dict):
            raise ValueError(
                "prior must be a mapping of DiffusionPrior options (preset/unet, checkpoint, ...)."
            )
        # The prior's options as given; ``prior_options`` adds the device's defaults.
        self.given_prior_options = dict(prior)
        self.prior_options = prior_options_on(prior, device)
        self.nat_weight, self.sem_weight = float(nat_weight), float(sem_weight)
        self.criterion, self.space, self.t_weighting = criterion, space, t_weighting
        self.snr_gamma, self.shared_noise, self.num_draws = snr_gamma, shared_noise, num_draws
        self.input_range, self.fit = input_range, fit
        # t, noise and crops come from this generator only (see :meth:`set_seed`), so adding
        # or removing a loss never moves the global RNG streams of a run.
        self.seed = 0 if seed is None else int(seed)
        self._generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None
        # Built now, so that a missing or wrong checkpoint fails before any data is loaded.
        self._set_prior(self._shared_prior(device))
        steps = self.prior.num_timesteps
        low, high = t_range if t_range is not None else (0, steps - 1)
        if not 0 <= low <= high < steps:
            raise ValueError(
                f"t_range {t_range} must satisfy 0 <= low <= high < {steps} (the prior's T)."
            )
        self.t_low, self.t_high = int(low), int(high)
        self.logged_terms: dict[str, float] = {}

    # -- the prior, held outside the module tree ------------------------------------------
    def _set_prior(self, prior: DiffusionPrior) -> None:
        object.__setattr__(self, "_prior", prior)  # not registered as a submodule

    @property
    def prior(self) -> DiffusionPrior:
        return self._prior

    def _shared_prior(self, device: str | torch.device | None) -> DiffusionPrior:
        # Building a UNet initialises weights from the global CPU RNG: keep that stream intact.
        with torch.random.fork_rng(devices=[]):
            return get_shared_prior(self.prior_options, device)

    def _prior_on(self, device: torch.device) -> DiffusionPrior:
        """The prior on ``device``. A loss built for another device (build it with the
        training device to avoid this) fetches the prior there and drops the old copy from
        the shared cache, so that it is freed once no other loss holds it."""
        old_device = self.prior.schedule.betas.device
        if old_device != device:
            old_options = self.prior_options
            self.prior_options = prior_options_on(self.given_prior_options, device)
            self._set_prior(self._shared_prior(device))
            release_shared_prior(old_options, old_device)
        return self.prior

    # -- the loss's own random numbers ----------------------------------------------------
    def set_seed(self, seed: int) -> None:
        """Restart the draws of t, noise and crops from ``seed`` (a non-negative integer)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        self.seed, self._generator, self._pending_state = seed, None, None

    def generator(self, device: torch.device | None = None) -> torch.Generator:
        """The generator on ``device`` (default: the prior's), created from ``seed`` (or a
        restored state) on first use and re-created when the device changes."""
        device = self.prior.schedule.betas.device if device is None else torch.device(device)
        gen = self._generator
        if gen is None or gen.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            if self._pending_state is not None:
                try:
                    gen.set_state(self._pending_state)
                except RuntimeError:  # a state saved on another device type (CPU <-> CUDA)
                    logger.warning(
                        "The saved DiffLoss generator state does not fit a %s generator; its "
                        "draws restart from seed %d (not an exact continuation).",
                        device.type,
                        self.seed,
                    )
                self._pending_state = None
            self._generator = gen
        return gen

    def generator_state(self) -> torch.Tensor:
        """The generator's state (a CPU uint8 tensor) for a training state."""
        if self._generator is None and self._pending_state is not None:
            return self._pending_state.clone()
        return self.generator().get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        """Restore :meth:`generator_state`; applied when the generator is (re-)created on the
        device it was saved from (a CUDA run's state waits for the first CUDA call)."""
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
            raise ValueError("A DiffLoss generator state must be a uint8 tensor (generator_state).")
        self._generator, self._pending_state = None, state.detach().cpu().clone()

    # -- steps of the computation ---------------------------------------------------------
    def fit_to_prior(
        self, x: torch.Tensor, z: torch.Tensor, prior: DiffusionPrior
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bring both images (B, 3, H, W) to a size the prior takes, identically."""
        size, factor = prior.image_size, prior.downsample_factor
        height, width = x.shape[-2:]
        if self.fit == "resize":
            if (height, width) != (size, size):
                x = F.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
                z = F.interpolate(
                    z, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
            return x, z
        if self.fit == "crop" and (height > size or width > size):
            crop_h, crop_w = min(height, size), min(width, size)
            gen = self.generator(x.device)
            top = int(torch.randint(0, height - crop_h + 1, (), generator=gen, device=x.device))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=gen, device=x.device))
            x = x[..., top : top + crop_h, left : left + crop_w]
            z = z[..., top : top + crop_h, left : left + crop_w]
            height, width = crop_h, crop_w
        pad_h, pad_w = -height % factor, -width % factor
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            z = F.pad(z, (0, pad_w, 0, pad_h), mode=mode)
        return x, z

    def timestep_weight(self, t: torch.Tensor, prior: DiffusionPrior) -> torch.Tensor:
        """w(t), (B,). snr: abar/(1-abar) (turns eps errors into x0 errors); min_snr:
        min(snr, gamma)/snr (Min-SNR-gamma, Hang et al. 2023); sqrt_abar: sqrt(abar_t)."""
        if self.t_weighting == "none":
            return torch.ones(t.shape, device=t.device, dtype=torch.float64)
        abar = prior.schedule.alphas_cumprod.to(t.device)[t]
        snr = abar / (1.0 - abar)
        if self.t_weighting == "snr":
            weight = snr
        elif self.t_weighting == "min_snr":
            weight = snr.clamp(max=self.snr_gamma) / snr
        else:
            weight = abar.sqrt()
        return weight

    def compare_space(
        self, prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        if self.space == "eps":
            return eps
        x0 = prior.predict_x0(x_t, t, eps)
        return x0 if self.space == "x0" else prior.posterior_mean(x0, x_t, t)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (L_nat, L_sem), each (B,) and already weighted by w(t) and averaged over
        ``num_draws``. ``pred`` (restored) carries gradient; ``target`` (clean) does not."""
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"DiffLoss needs restored and clean images of one shape B x 3 x H x W; got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}."
            )
        prior = self._prior_on(pred.device)
        need_eps, need_h = self.nat_weight != 0, self.sem_weight != 0
        dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32  # float64: tests
        z, x = pred.to(dtype), target.detach().to(dtype)
        if self.input_range == "0_1":
            z, x = z * 2.0 - 1.0, x * 2.0 - 1.0
        x, z = self.fit_to_prior(x, z, prior)
        batch = x.shape[0]
        nat = torch.zeros(batch, device=x.device, dtype=dtype)
        sem = torch.zeros(batch, device=x.device, dtype=dtype)
        gen = self.generator(x.device)
        for _ in range(self.num_draws):
            t = torch.randint(self.t_low, self.t_high + 1, (batch,), device=x.device, generator=gen)
            noise_clean = torch.randn(x.shape, device=x.device, dtype=dtype, generator=gen)
            noise_restored = (
                noise_clean
                if self.shared_noise
                else torch.randn(z.shape, device=x.device, dtype=dtype, generator=gen)
            )
            x_t = prior.q_sample(x, t, noise_clean)
            z_t = prior.q_sample(z, t, noise_restored)
            with torch.no_grad():
                eps_clean, h_clean = prior(x_t, t, need_eps=need_eps, need_h=need_h)
            eps_restored, h_restored = prior(z_t, t, need_eps=need_eps, need_h=need_h)
            weight = self.timestep_weight(t, prior).to(dtype)
            if need_eps:
                a = self.compare_space(prior, x_t, t, eps_clean)
                b = self.compare_space(prior, z_t, t, eps_restored)
                nat = nat + weight * per_sample_distance(b, a, self.criterion)
            if need_h:
                sem = sem + weight * per_sample_distance(h_restored, h_clean, self.criterion)
        return nat / self.num_draws, sem / self.num_draws

    def extra_repr(self) -> str:
        return (
            f"nat_weight={self.nat_weight}, sem_weight={self.sem_weight}, criterion={self.criterion!r}, "
            f"space={self.space!r}, t_range=({self.t_low}, {self.t_high}), t_weighting={self.t_weighting!r}, "
            f"shared_noise={self.shared_noise}, num_draws={self.num_draws}, fit={self.fit!r}, "
            f"seed={self.seed}"
        )


class PriorLoss(nn.Module):
    """Base of the registered DiffLoss / NaturalnessLoss / SemanticLoss (BasicSR convention:
    ``loss(pred, target)`` returns ``loss_weight`` times the reduced loss).

    Subclasses say which terms they use (``uses_nat``, ``uses_sem``); ``lambda_sem`` (the
    paper's lambda, default 0.01) weighs L_sem against L_nat when both are used. After each
    call ``logged_terms`` holds the unweighted batch means ``nat`` and ``sem`` for the log.

    Args:
        loss_weight: the paper's gamma (0.001 in its experiments).
        prior: DiffusionPrior options (``preset``/``unet``, ``checkpoint``, ``dtype``,
            ``channels_last``, ``checkpointing``, ``attention``, ...; see docs/prior.md).
        criterion: distance d: ``mse`` (mean of squares, what the authors' released code
            computes; default), ``l2`` (the Euclidean norm ||.||_2 of the paper's Eq. 11/14;
            gamma transfers as in docs/diffloss.md), ``l1`` or ``charbonnier``.
        space: where L_nat compares: ``eps`` (paper), ``x0`` or ``xprev`` (ablation, Table 4).
        t_range: ``[low, high]`` inclusive range of timesteps drawn (default: all).
        t_weighting: ``none`` (paper), ``snr``, ``min_snr`` (with ``snr_gamma``), ``sqrt_abar``.
        shared_noise: the same noise for both branches (paper: yes).
        num_draws: (t, noise) draws per image and step, averaged.
        input_range: ``0_1`` images are mapped to [-1, 1]; ``-1_1`` are used as they are.
        fit: ``crop`` (random crop to the prior's size when larger, then pad), ``resize`` (to
            the prior's size) or ``pad`` (reflect-pad to a multiple of its downsampling).
        device: where the prior lives; default: the training device.
        seed: seed of the loss's own generator for t, noise and crops (default 0; in training
            derived from ``manual_seed`` and the rank unless given, and saved on resume).
    """

    uses_nat = True
    uses_sem = True

    def __init__(
        self,
        prior: dict[str, Any],
        loss_weight: float = 1.0,
        lambda_sem: float | None = None,
        reduction: str = "mean",
        criterion: str = "mse",
        space: str = "eps",
        t_range: list[int] | None = None,
        t_weighting: str = "none",
        snr_gamma: float = 5.0,
        shared_noise: bool = True,
        num_draws: int = 1,
        input_range: str = "0_1",
        fit: str = "crop",
        device: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _choice("reduction", reduction, ("mean", "sum", "none"))
        if lambda_sem is not None and not (self.uses_nat and self.uses_sem):
            raise ValueError(f"{type(self).__name__} has a single term; lambda_sem does not apply.")
        lambda_sem = 0.01 if lambda_sem is None else lambda_sem
        self.loss_weight, self.reduction = loss_weight, reduction
        self.core = PriorLossCore(
            prior,
            nat_weight=1.0 if self.uses_nat else 0.0,
            sem_weight=(lambda_sem if self.uses_nat else 1.0) if self.uses_sem else 0.0,
            criterion=criterion,
            space=space,
            t_range=t_range,
            t_weighting=t_weighting,
            snr_gamma=snr_gamma,
            shared_noise=shared_noise,
            num_draws=num_draws,
            input_range=input_range,
            fit=fit,
            device=device,
            seed=seed,
        )
        self.seed_given = seed is not None
        self.logged_terms: dict[str, float] = {}

    @property
    def prior(self) -> DiffusionPrior:
        return self.core.prior

    def set_seed(self, seed: int) -> None:
        """See :meth:`PriorLossCore.set_seed`."""
        self.core.set_seed(seed)

    def generator_state(self) -> torch.Tensor:
        return self.core.generator_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.core.set_generator_state(state)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_weight == 0:  # switched off: no prior call, no draws
            self.logged_terms = {}
            zeros = pred.new_zeros(pred.shape[0])
            return zeros if self.reduction == "none" else zeros.sum()
        nat, sem = self.core(pred, target)
        per_sample = self.core.nat_weight * nat + self.core.sem_weight * sem
        self.logged_terms = {}
        if self.uses_nat:
            self.logged_terms["nat"] = nat.detach().mean().item()
        if self.uses_sem:
            self.logged_terms["sem"] = sem.detach().mean().item()
        if self.reduction == "mean":
            per_sample = per_sample.mean()
        elif self.reduction == "sum":
            per_sample = per_sample.sum()
        return self.loss_weight * per_sample
