"""Learning-rate schedules and EMA against direct formulas."""

import math

import pytest
import torch
import torch.nn as nn

from diffsr.models.ema import ModelEMA
from diffsr.models.lr_scheduler import build_schedule


def test_multistep_with_restarts_and_warmup():
    sched = build_schedule(
        {
            "type": "MultiStepRestartLR",
            "milestones": [10, 20, 40],
            "gamma": 0.5,
            "restarts": [30],
            "restart_weights": [0.8],
        },
        warmup_iter=5,
    )
    expected = {
        1: 1 / 5,
        5: 1.0,
        9: 1.0,
        10: 0.5,
        19: 0.5,
        20: 0.25,
        29: 0.25,
        30: 0.8,
        39: 0.8,
        40: 0.4,
    }
    for it, value in expected.items():
        assert sched.factor(it) == pytest.approx(value), it


def test_cosine_restart_matches_formula():
    base, eta_min = 2e-4, 1e-7
    sched = build_schedule(
        {
            "type": "CosineAnnealingRestartLR",
            "periods": [10, 20],
            "restart_weights": [1, 0.5],
            "eta_min": eta_min,
        }
    )
    for it in range(0, 31):
        if it <= 10:
            want = eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * it / 10))
        else:
            # BasicSR: eta_min + weight * (base - eta_min) * (1 + cos) / 2
            want = eta_min + 0.5 * (base - eta_min) * 0.5 * (1 + math.cos(math.pi * (it - 10) / 20))
        assert base * sched.factor(it, base) == pytest.approx(want, rel=1e-9, abs=1e-15), it


def test_bad_cosine_options_are_named():
    with pytest.raises(ValueError, match="restart_weights"):
        build_schedule(
            {"type": "CosineAnnealingRestartLR", "periods": [10, 20], "restart_weights": [1]}
        )


def test_ema_update_is_the_exponential_average():
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, decay=0.9)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    torch.testing.assert_close(ema.module.weight, 0.9 * start + 0.1 * (start + 1.0))
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="ema_decay"):
        ModelEMA(net, decay=1.5)
