"""Optimizers by name (any torch.optim class) and BasicSR's / Restormer's lr schedules.

References: torch's own schedulers where they coincide, otherwise the formulas written out
(BasicSR / Restormer lr_scheduler.py) or values computed by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffsr.models.lr_scheduler import build_schedule
from diffsr.models.optimizers import build_optimizer, check_optimizer_options
from diffsr.utils.options import OptionError, validate_options
from tests.helpers.fixtures import train_options


def _torch_lrs(make, steps: int, base: float = 1.0) -> list[float]:
    """lr of a torch scheduler after t = 0 .. steps - 1 calls of step()."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


# ----------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize(
    ("block", "cls", "checks"),
    [
        ({"type": "SGD", "lr": 0.1, "momentum": 0.9}, torch.optim.SGD, {"momentum": 0.9}),
        ({"type": "RMSprop", "lr": 1e-3, "alpha": 0.9}, torch.optim.RMSprop, {"alpha": 0.9}),
        ({"type": "Adamax", "lr": 2e-3}, torch.optim.Adamax, {"betas": (0.9, 0.999)}),
        ({"type": "Adam", "lr": 1e-4}, torch.optim.Adam, {"betas": (0.9, 0.99)}),
        (
            {"type": "AdamW", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 1e-4},
            torch.optim.AdamW,
            {"betas": (0.9, 0.999), "weight_decay": 1e-4},
        ),
    ],
)
def test_any_torch_optimizer_by_name(block, cls, checks):
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(3))], block)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == block["lr"]
    for key, value in checks.items():
        assert group[key] == value, key


def test_sgd_step_is_torch_sgd():
    """The built optimizer moves a parameter exactly as a hand-built torch.optim.SGD."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    ours = build_optimizer([a], {"type": "SGD", "lr": 0.5, "momentum": 0.5, "nesterov": True})
    ref = torch.optim.SGD([b], lr=0.5, momentum=0.5, nesterov=True)
    for _ in range(3):
        for param, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            (param**2).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_optimizer_arguments_are_checked_at_option_load(tmp_path: Path):
    opt = train_options(tmp_path)
    opt["train"]["optim_g"] = {"type": "SGD", "lr": 0.1, "betas": [0.9, 0.99]}
    with pytest.raises(OptionError, match=r"train\.optim_g.*SGD.*does not take the option 'betas'"):
        validate_options(opt, "x.yml")
    opt["train"]["optim_g"] = {"type": "Adamm", "lr": 0.1}
    with pytest.raises(OptionError, match=r"not a torch\.optim class\. Did you mean 'Adam'"):
        validate_options(opt, "x.yml")
    opt["train"]["optim_g"] = {"type": "SGD", "momentum": 0.9}
    with pytest.raises(OptionError, match=r"train\.optim_g\.lr is required"):
        validate_options(opt, "x.yml")
    opt["train"]["optim_g"] = {"type": "RMSprop", "lr": 0.1, "centered": True}
    assert validate_options(opt, "x.yml")["train"]["optim_g"]["centered"] is True


def test_check_optimizer_fills_only_adam_defaults():
    assert check_optimizer_options({"lr": 1}) == {"type": "Adam", "betas": [0.9, 0.99], "lr": 1}
    assert check_optimizer_options({"type": "SGD", "lr": 1}) == {"type": "SGD", "lr": 1}


# ----------------------------------------------------------------------------- schedulers
def test_multistep_equals_torch_multisteplr():
    sched = build_schedule({"type": "MultiStepLR", "milestones": [3, 7, 7, 12], "gamma": 0.5})
    make = lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 7, 7, 12], gamma=0.5)  # noqa: E731
    for t, want in enumerate(_torch_lrs(make, 16)):
        assert sched.factor(t) == pytest.approx(want, rel=1e-12), t


def test_multistep_default_gamma_is_basicsr_0_1():
    assert build_schedule({"type": "MultiStepLR", "milestones": [2]}).factor(2) == pytest.approx(
        0.1
    )


def test_cosine_restart_single_period_equals_torch_cosine():
    base, eta_min, period = 2e-4, 1e-7, 20
    sched = build_schedule(
        {"type": "CosineAnnealingRestartLR", "periods": [period], "eta_min": eta_min}
    )
    make = lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, period, eta_min)  # noqa: E731
    for t, want in enumerate(_torch_lrs(make, period + 1, base)):
        assert base * sched.factor(t, base) == pytest.approx(want, rel=1e-9), t


def test_true_cosine_equals_torch_cosine_past_t_max():
    base, eta_min = 1e-3, 1e-5
    sched = build_schedule({"type": "TrueCosineAnnealingLR", "T_max": 10, "eta_min": eta_min})
    make = lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, eta_min)  # noqa: E731
    for t, want in enumerate(_torch_lrs(make, 26, base)):
        assert base * sched.factor(t, base) == pytest.approx(want, rel=1e-9), t


def test_cosine_restart_cyclic_matches_restormer_formula():
    """MB-TaylorFormer's schedule shrunk: constant 2e-4 in period 1 (eta = base), cosine to 1e-5."""
    base = 2e-4
    sched = build_schedule(
        {
            "type": "CosineAnnealingRestartCyclicLR",
            "periods": [20, 30],
            "restart_weights": [1, 0.5],
            "eta_mins": [2e-4, 1e-5],
        }
    )
    for t in range(0, 61):
        if t <= 20:
            want = base
        else:
            progress = min(t - 20, 30) / 30
            want = 1e-5 + 0.5 * 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * progress))
        assert base * sched.factor(t, base) == pytest.approx(want, rel=1e-9, abs=1e-15), t


def test_linear_and_vibrate_lr_by_hand():
    linear = build_schedule({"type": "LinearLR"}, total_iter=200)
    assert [linear.factor(t) for t in (0, 50, 200)] == pytest.approx([1.0, 0.75, 0.0])
    # total 800: wave period 10, half 5; envelope 1 - 8t/2400 before t = 300, 0.2 to 500, then 0.1
    vibrate = build_schedule({"type": "VibrateLR"}, total_iter=800)
    by_hand = {
        0: 0.1,  # first half-wave: at least 0.1
        3: (1 - 3 / 300) * 3 / 5,
        7: (1 - 7 / 300) * (2 - 7 / 5),
        12: (1 - 12 / 300) * 2 / 5,
        400: 0.0,
        402: 0.2 * 2 / 5,
        603: 0.1 * 3 / 5,
        609: 0.1 * (2 - 9 / 5),
    }
    for t, want in by_hand.items():
        assert vibrate.factor(t) == pytest.approx(want, abs=1e-12), t


@pytest.mark.parametrize(
    ("scheduler", "total_iter", "message"),
    [
        ({"type": "CosineAnnealingRestartLR"}, 10, r"train\.scheduler\.periods is required"),
        (
            {"type": "CosineAnnealingRestartCyclicLR", "periods": [5, 5], "eta_mins": [0]},
            10,
            r"eta_mins must have one entry per period \(2\)",
        ),
        ({"type": "MultiStepLR", "milestones": [5], "eta_min": 0}, 10, "not an argument of"),
        ({"type": "VibrateLR"}, 100, r"needs train\.total_iter >= 160"),
        ({"type": "CosineAnnealingLRR", "periods": [5]}, 10, "Did you mean"),
    ],
)
def test_scheduler_errors_at_option_load(tmp_path: Path, scheduler, total_iter, message):
    opt = train_options(tmp_path, total_iter=total_iter, scheduler=scheduler)
    with pytest.raises(OptionError, match=message):
        validate_options(opt, "x.yml")


def test_model_applies_the_schedule_per_iteration(tmp_path: Path):
    """RestorationModel.update_learning_rate sets base * factor(t) on its optimizer."""
    from diffsr.models import build_model
    from diffsr.utils.options import _fill_paths

    opt = train_options(
        tmp_path, total_iter=200, scheduler={"type": "LinearLR"}, optim_g={"type": "SGD", "lr": 0.2}
    )
    opt = validate_options(opt, "x.yml")
    _fill_paths(opt)
    model = build_model(opt)
    assert type(model.optimizer_g) is torch.optim.SGD
    for t in (1, 100, 150):
        model.update_learning_rate(t)
        assert model.get_current_learning_rate() == pytest.approx(0.2 * (1 - t / 200))
