"""Training a prior: the DDPM objective against guided-diffusion, and the trainer round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffsr.diffusion import DiffusionPrior, DiffusionSchedule
from diffsr.diffusion.training_loss import ddpm_loss
from diffsr.train import main as train_main
from tests.helpers.fixtures import TINY_PRIOR_UNET, make_paired_folder, read_jsonl, write_options

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion", reason="test-only reference")


def _reference_diffusion(steps: int):
    return gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule("linear", steps),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.RESCALED_MSE,
    )


def test_mse_term_is_the_noise_prediction_error():
    schedule = DiffusionSchedule("linear", 100)
    x0, noise, out = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 50, 99])
    terms = ddpm_loss(out, x0, schedule.q_sample(x0, t, noise), t, noise, schedule)
    torch.testing.assert_close(terms["mse"], ((out - noise) ** 2).mean(dim=(1, 2, 3)))
    assert "vb" not in terms


def test_variational_term_matches_guided_diffusion():
    steps = 100
    schedule = DiffusionSchedule("linear", steps).double()
    reference = _reference_diffusion(steps)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    out = torch.randn(4, 6, 8, 8, generator=generator, dtype=torch.float64).clamp(-1, 1)
    t = torch.tensor([1, 10, 50, 99])
    x_t = schedule.q_sample(x0, t, noise)
    ours = ddpm_loss(out, x0, x_t, t, noise, schedule)
    theirs = reference._vb_terms_bpd(
        model=lambda *_a, **_k: out, x_start=x0, x_t=x_t, t=t, clip_denoised=False
    )["output"] * (steps / 1000.0)
    torch.testing.assert_close(
        ours["vb"], theirs, rtol=1e-6, atol=1e-9
    )  # upstream rounds coefficients to float32

    t0 = torch.zeros(4, dtype=torch.long)  # the decoder term: exact CDF vs upstream's tanh approx
    x_t0 = schedule.q_sample(x0, t0, noise)
    ours0 = ddpm_loss(out, x0, x_t0, t0, noise, schedule)["vb"]
    theirs0 = reference._vb_terms_bpd(
        model=lambda *_a, **_k: out, x_start=x0, x_t=x_t0, t=t0, clip_denoised=False
    )["output"] * (steps / 1000.0)
    torch.testing.assert_close(ours0, theirs0, rtol=2e-2, atol=1e-4)


def _prior_options(tmp: Path) -> dict:
    _, gt = make_paired_folder(tmp / "clean", 6, size=20)
    return {
        "name": "prior",
        "model_type": "DiffusionPriorModel",
        "device": "cpu",
        "datasets": {
            "train": {
                "name": "clean",
                "type": "SingleImageDataset",
                "role": "gt",
                "dataroot_gt": str(gt),
                "gt_size": 16,
                "use_hflip": True,
                "batch_size_per_gpu": 3,
                "num_worker_per_gpu": 0,
            },
            "val": {
                "name": "clean_val",
                "type": "SingleImageDataset",
                "role": "gt",
                "dataroot_gt": str(gt),
                "gt_size": 16,
            },
        },
        "network_g": {"type": "ADMUNet", **TINY_PRIOR_UNET},
        "diffusion": {"diffusion_steps": 50, "val_draws": 2},
        "path": {"experiments_root": str(tmp / "exp")},
        "train": {"optim_g": {"lr": 1e-3}, "total_iter": 4, "ema_decay": 0.9},
        "val": {"val_freq": 4, "pbar": False},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 4},
    }


def test_train_prior_then_load_it_as_a_frozen_prior(tmp_path: Path):
    opt = _prior_options(tmp_path)
    assert train_main(["-opt", str(write_options(tmp_path / "prior.yml", opt))]) == 0
    records = read_jsonl(tmp_path / "exp" / "metrics.jsonl")
    losses = [r for r in records if "l_total" in r]
    assert len(losses) == 4 and all({"l_mse", "l_vb"} <= set(r) for r in losses)
    assert np.isfinite([r["eps_mse"] for r in records if "eps_mse" in r]).all()

    checkpoint = tmp_path / "exp" / "models" / "net_g_latest.pth"
    unet = {k: v for k, v in opt["network_g"].items() if k != "type"}
    prior = DiffusionPrior(unet=unet, checkpoint=str(checkpoint), diffusion_steps=50)
    saved = torch.load(checkpoint, map_location="cpu")["params_ema"]
    for name, tensor in prior.unet.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])  # the EMA weights are the ones loaded
    eps, h = prior(torch.zeros(1, 3, 16, 16), torch.tensor([10]), need_h=True)
    assert eps.shape == (1, 3, 16, 16) and h is not None
