"""grad_share_<term>: each loss term's gradient norm at the network output relative to the pixel
term's, against gradients written out by hand, and in the training log."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsr.diffusion import clear_shared_priors
from diffsr.losses import LOSS_REGISTRY
from diffsr.models.grad_share import gradient_norm, gradient_shares
from diffsr.train import main as train_main
from tests.helpers.fixtures import TINY_PRIOR_UNET, read_jsonl, train_options, write_options


def _network_outputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1).double()
    lq = torch.rand(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    gt = torch.rand(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    first = conv(lq)
    return [first, first * 0.5 + lq], gt


def test_shares_match_gradients_written_by_hand():
    outputs, gt = _network_outputs()
    final = outputs[-1]
    mse = LOSS_REGISTRY.build({"type": "MSELoss", "loss_weight": 1.0})
    l1 = LOSS_REGISTRY.build({"type": "L1Loss", "loss_weight": 0.3})
    values = {"pixel": mse(final, gt), "l1": l1(final, gt), "first": mse(outputs[0], gt)}
    shares = gradient_shares(values, final)

    out, target = final.detach().numpy(), gt.numpy()
    n = out.size
    grad_mse = 2 * (out - target) / n  # d mean((o - g)^2) / d o
    grad_l1 = 0.3 * np.sign(out - target) / n
    ref = np.linalg.norm(grad_mse)
    assert set(shares) == {"grad_share_l1", "grad_share_first"}
    assert shares["grad_share_l1"] == pytest.approx(np.linalg.norm(grad_l1) / ref, rel=1e-10)
    assert shares["grad_share_first"] == 0.0  # a term on an earlier output: nothing at the final
    # the graph is kept: the training step's own backward still works afterwards
    sum(values.values()).backward()


def test_reference_is_the_first_term_without_a_pixel_term_and_edge_cases():
    outputs, gt = _network_outputs()
    final = outputs[-1]
    values = {"a": (final - gt).square().mean(), "b": 2 * (final - gt).square().mean()}
    assert gradient_shares(values, final) == {"grad_share_b": pytest.approx(2.0, rel=1e-12)}
    assert gradient_shares({"pixel": values["a"]}, final) == {}
    off = {"pixel": values["a"], "diffloss": torch.zeros(())}  # a switched-off term
    assert gradient_shares(off, final) == {"grad_share_diffloss": 0.0}
    flat = {"pixel": torch.zeros(()), "x": values["a"]}
    assert math.isnan(gradient_shares(flat, final)["grad_share_x"])
    assert gradient_norm(values["a"], final) == pytest.approx(
        float(np.linalg.norm(2 * (final - gt).detach().numpy() / final.numel())), rel=1e-10
    )


def _diffloss_run(tmp_path: Path, name: str, *extra: str) -> Path:
    block = {
        "type": "DiffLoss",
        "loss_weight": 0.01,
        "prior": {"unet": TINY_PRIOR_UNET, "diffusion_steps": 100},
    }
    opt = train_options(tmp_path / name, name=name, total_iter=5, diffloss_opt=block)
    opt["logger"]["print_freq"] = 2
    path = write_options(tmp_path / f"{name}.yml", opt)
    assert train_main(["-opt", str(path), *extra]) == 0
    return Path(opt["path"]["experiments_root"])


def test_training_logs_shares_on_logging_steps_only_and_changes_nothing(tmp_path: Path):
    clear_shared_priors()
    root = _diffloss_run(tmp_path, "on")
    records = [r for r in read_jsonl(root / "metrics.jsonl") if "l_total" in r]
    assert [r["iter"] for r in records] == [2, 4, 5]
    assert all(
        r["grad_share_diffloss"] > 0 and math.isfinite(r["grad_share_diffloss"]) for r in records
    )
    off = _diffloss_run(tmp_path, "off", "--set", "logger.grad_share=false")
    off_records = [r for r in read_jsonl(off / "metrics.jsonl") if "l_total" in r]
    assert not any("grad_share_diffloss" in r for r in off_records)
    a = torch.load(root / "models" / "net_g_latest.pth", map_location="cpu")["params"]
    b = torch.load(off / "models" / "net_g_latest.pth", map_location="cpu")["params"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # measuring does not move the run
    clear_shared_priors()
