"""DiffLoss, NaturalnessLoss and SemanticLoss on a tiny random prior.

Reference values are computed here from the UNet and the beta schedule directly (numpy
cumulative products), not through the loss code.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsr.losses import build_loss
from diffsr.train import main as train_main
from tests.helpers.fixtures import (
    TINY_PRIOR,
    TINY_PRIOR_UNET,
    read_jsonl,
    train_options,
    write_options,
)

PRIOR = TINY_PRIOR


pytestmark = pytest.mark.usefixtures("fresh_prior_cache")


def make(loss_type: str = "DiffLoss", **options):
    return build_loss({"type": loss_type, "prior": copy.deepcopy(PRIOR), **options})


def images(batch: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 3, size, size, generator=generator)
    restored = (clean + 0.1 * torch.randn(batch, 3, size, size, generator=generator)).clamp(0, 1)
    return restored, clean


def test_zero_for_identical_images_and_positive_otherwise():
    loss = make(lambda_sem=0.5)
    restored, clean = images()
    assert loss(clean.clone(), clean).item() == 0.0
    value = loss(restored, clean)
    assert value.item() > 0 and loss.logged_terms["nat"] > 0 and loss.logged_terms["sem"] > 0


def test_gradient_reaches_the_restored_image_but_not_the_prior():
    loss = make()
    restored, clean = images()
    restored.requires_grad_(True)
    loss(restored, clean).backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.prior.parameters())
    assert not list(loss.parameters()) and not loss.state_dict()  # prior is not a submodule


def test_clean_branch_builds_no_graph(monkeypatch):
    loss = make()
    prior = loss.prior
    seen = []
    original = type(prior).forward

    def spy(self, x_t, t, **kwargs):
        seen.append(torch.is_grad_enabled())
        return original(self, x_t, t, **kwargs)

    monkeypatch.setattr(type(prior), "forward", spy)
    restored, clean = images()
    loss(restored.requires_grad_(True), clean)
    assert seen == [False, True]  # clean branch under no_grad, restored branch with autograd


def test_gradient_matches_finite_differences_in_float64():
    loss = make(lambda_sem=0.3)
    loss.prior.double()
    restored, clean = images(batch=1, size=8)
    restored = restored.double().requires_grad_(True)

    def seeded(pred):
        loss.set_seed(123)  # the same t and noise for every evaluation
        return loss(pred, clean.double())

    assert torch.autograd.gradcheck(
        seeded, (restored,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True
    )


def test_seeded_calls_repeat_exactly():
    loss = make()
    restored, clean = images()
    loss.set_seed(5)
    first = loss(restored, clean)
    loss.set_seed(5)
    assert loss(restored, clean).item() == first.item()
    loss.set_seed(6)
    assert loss(restored, clean).item() != first.item()


def _reference(
    loss,
    restored,
    clean,
    seed: int,
    space: str,
    weighting: str,
    lambda_sem: float,
    gamma: float = 5.0,
):
    """The method.md equations written out: shared t and eps, Eq. 7-16."""
    unet = loss.prior.unet
    betas = np.linspace(1e-4 * 10, 0.02 * 10, 100)  # linear schedule scaled by 1000 / T
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    torch.manual_seed(seed)
    t = torch.randint(0, 100, (clean.shape[0],))
    eps = torch.randn_like(clean)
    x, z = clean * 2 - 1, restored * 2 - 1
    a = torch.tensor(abar[t.numpy()], dtype=torch.float64).view(-1, 1, 1, 1)
    ap = torch.tensor(abar_prev[t.numpy()], dtype=torch.float64).view(-1, 1, 1, 1)
    beta = torch.tensor(betas[t.numpy()], dtype=torch.float64).view(-1, 1, 1, 1)
    x_t = (a.sqrt() * x + (1 - a).sqrt() * eps).float()
    z_t = (a.sqrt() * z + (1 - a).sqrt() * eps).float()
    with torch.no_grad():
        out_x, h_x = unet(x_t, t, return_h=True)
        out_z, h_z = unet(z_t, t, return_h=True)
    eps_x, eps_z = out_x[:, :3].double(), out_z[:, :3].double()

    def to_space(x_t, e):
        x0 = (x_t.double() - (1 - a).sqrt() * e) / a.sqrt()
        if space == "x0":
            return x0
        return (
            beta * ap.sqrt() / (1 - a) * x0 + (1 - ap) * (1 - beta).sqrt() / (1 - a) * x_t.double()
        )

    if space != "eps":
        eps_x, eps_z = to_space(x_t, eps_x), to_space(z_t, eps_z)
    nat = ((eps_z - eps_x) ** 2).mean(dim=(1, 2, 3))
    sem = ((h_z.double() - h_x.double()) ** 2).mean(dim=(1, 2, 3))
    snr = torch.tensor(abar[t.numpy()] / (1 - abar[t.numpy()]))
    weight = {
        "none": torch.ones_like(snr),
        "snr": snr,
        "min_snr": snr.clamp(max=gamma) / snr,
        "sqrt_abar": torch.tensor(abar[t.numpy()]).sqrt(),
    }[weighting]
    return (weight * (nat + lambda_sem * sem)).mean().item()


@pytest.mark.parametrize("space", ["eps", "x0", "xprev"])
@pytest.mark.parametrize("weighting", ["none", "snr", "min_snr", "sqrt_abar"])
def test_each_space_and_weighting_follows_the_equations(space: str, weighting: str):
    loss = make(space=space, t_weighting=weighting, lambda_sem=0.2, loss_weight=1.0)
    restored, clean = images(batch=3)
    loss.set_seed(11)  # its own generator draws what torch.manual_seed(11) would
    ours = loss(restored, clean).item()
    want = _reference(loss, restored, clean, 11, space, weighting, 0.2)
    assert ours == pytest.approx(want, rel=2e-4)


def test_single_term_losses_and_semantic_stops_at_the_middle_block(monkeypatch):
    restored, clean = images()
    nat = make("NaturalnessLoss")
    nat.set_seed(3)
    nat_value = nat(restored, clean).item()
    sem = make("SemanticLoss")
    calls = []
    original = type(sem.prior.unet).forward

    def spy(self, x, t, y=None, return_h=False, h_only=False):
        calls.append(h_only)
        return original(self, x, t, y=y, return_h=return_h, h_only=h_only)

    monkeypatch.setattr(type(sem.prior.unet), "forward", spy)
    sem.set_seed(3)
    sem_value = sem(restored, clean).item()
    sem_calls = list(calls)
    both = make(lambda_sem=1.0)
    both.set_seed(3)
    assert both(restored, clean).item() == pytest.approx(nat_value + sem_value, rel=1e-5)
    assert sem_calls == [True, True]  # both branches stopped after the middle block
    with pytest.raises(ValueError, match="lambda_sem does not apply"):
        make("NaturalnessLoss", lambda_sem=0.1)


def test_loss_blocks_with_the_same_prior_share_one_instance():
    assert make().prior is make("SemanticLoss").prior
    other = build_loss({"type": "DiffLoss", "prior": {**PRIOR, "attention": "legacy"}})
    assert other.prior is not make().prior


def test_fit_modes_reach_the_prior_at_a_size_it_takes():
    restored, clean = images(size=21)
    for fit in ("crop", "resize", "pad"):
        assert torch.isfinite(make(fit=fit)(restored, clean))
    crop = make(fit="crop").core
    x, z = crop.fit_to_prior(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40), crop.prior)
    assert x.shape[-2:] == (16, 16) and z.shape == x.shape


def test_bad_options_are_reported():
    with pytest.raises(ValueError, match="space is 'x1'"):
        make(space="x1")
    with pytest.raises(ValueError, match="t_range"):
        make(t_range=[10, 200])
    with pytest.raises(FileNotFoundError, match=r"does not exist|not found|missing"):
        make(prior={"unet": TINY_PRIOR_UNET, "checkpoint": "nowhere/prior.pt"})


def test_training_with_diffloss_logs_terms_and_leaves_the_prior_untouched(tmp_path: Path):
    opt = train_options(tmp_path, total_iter=3, ema_decay=0.9)
    opt["train"]["diffloss_opt"] = {
        "type": "DiffLoss",
        "loss_weight": 0.1,
        "lambda_sem": 0.01,
        "prior": copy.deepcopy(PRIOR),
    }
    opt["val"]["val_freq"] = 3
    from diffsr.diffusion import get_shared_prior

    prior = get_shared_prior(copy.deepcopy(PRIOR), "cpu")
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    assert train_main(["-opt", str(write_options(tmp_path / "opt.yml", opt))]) == 0
    root = Path(opt["path"]["experiments_root"])
    records = [r for r in read_jsonl(root / "metrics.jsonl") if "l_total" in r]
    assert all(
        {"l_pixel", "l_diffloss", "l_diffloss_nat", "l_diffloss_sem"} <= set(r) for r in records
    )
    assert all(r["l_diffloss"] > 0 for r in records)
    after = prior.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    saved = torch.load(root / "models" / "net_g_latest.pth", map_location="cpu")
    prior_keys = set(before)
    assert not prior_keys & set(saved["params"]) and not prior_keys & set(saved["params_ema"])


@pytest.mark.parametrize("amp", [False, True], ids=["float32-net", "amp-float16-net"])
def test_training_with_a_float16_prior(tmp_path: Path, amp: bool):
    # The prior's own gradient scaling next to the trainer's (AMP with a GradScaler): both
    # runs train, with finite losses and no overflow in the prior's float16 backward.
    opt = train_options(tmp_path, total_iter=3, amp=amp, amp_dtype="float16")
    opt["logger"]["grad_share"] = False  # its measurement would add backwards of its own
    prior = {**copy.deepcopy(PRIOR), "dtype": "float16"}
    opt["train"]["diffloss_opt"] = {"type": "DiffLoss", "loss_weight": 0.1, "prior": prior}
    from diffsr.diffusion import get_shared_prior

    shared = get_shared_prior({**copy.deepcopy(prior), "channels_last": True}, "cpu")  # its key
    scales: list[float] = []
    choose_scale = shared.grad_scaling.choose_scale
    shared.grad_scaling.choose_scale = lambda largest: (
        scales.append(choose_scale(largest)) or scales[-1]
    )
    assert train_main(["-opt", str(write_options(tmp_path / "opt.yml", opt))]) == 0
    # The training used this prior and scaled each of its three backwards by a power of two:
    # a large one for DiffLoss's tiny gradients, a small one when the trainer's GradScaler
    # (x 65536) has amplified them already.
    exponents = np.log2(scales)
    assert len(scales) == 3 and np.array_equal(exponents, np.round(exponents)), scales
    assert (exponents.max() <= 8) if amp else (exponents.min() >= 12), scales
    records = [
        r
        for r in read_jsonl(Path(opt["path"]["experiments_root"]) / "metrics.jsonl")
        if "l_total" in r
    ]
    assert records and all(np.isfinite(r["l_diffloss"]) and r["l_diffloss"] > 0 for r in records)
    assert shared.grad_scaling.overflows == 0


def test_missing_prior_checkpoint_fails_before_data_is_loaded(tmp_path: Path, capsys):
    opt = train_options(tmp_path, total_iter=1)
    opt["datasets"]["train"]["dataroot_lq"] = str(tmp_path / "no_such_folder")
    opt["train"]["diffloss_opt"] = {
        "type": "DiffLoss",
        "prior": {
            "preset": "adm_256_uncond",
            "checkpoint": str(tmp_path / "256x256_diffusion_uncond.pt"),
        },
    }
    with pytest.raises(FileNotFoundError, match=r"256x256_diffusion_uncond\.pt"):
        train_main(["-opt", str(write_options(tmp_path / "opt.yml", opt))])
