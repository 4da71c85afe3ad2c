"""The demo's options run twice give bit-identical weights; the pinned thread count is applied
and recorded with the run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffsr.diffusion import clear_shared_priors
from diffsr.train import main as train_main
from diffsr.utils.yaml_util import load_yaml
from tests.helpers.fixtures import make_paired_folder, read_jsonl
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "options" / "demo" / "dehaze_demo_diffloss.yml"


def _demo_run(tmp_path: Path, name: str) -> Path:
    """The demo's DiffLoss options (FSDGN, demo prior, pinned threads) on tiny generated data."""
    train_lq, train_gt = make_paired_folder(tmp_path / "train", 6, size=24, seed=1)
    val_lq, val_gt = make_paired_folder(tmp_path / "val", 1, size=24, seed=2)
    root = tmp_path / name
    overrides = [
        f"datasets.train.dataroot_lq={train_lq}",
        f"datasets.train.dataroot_gt={train_gt}",
        "datasets.train.gt_size=16",
        f"datasets.val.dataroot_lq={val_lq}",
        f"datasets.val.dataroot_gt={val_gt}",
        f"train.diffloss_opt.prior.checkpoint={REPO / 'experiments/pretrained_models/demo_prior_64.pth'}",
        "train.total_iter=3",
        "train.diffloss_opt.loss_weight=0.1",
        "val.val_freq=3",
        "logger.print_freq=3",
        f"name={name}",
        f"path.experiments_root={root}",
    ]
    clear_shared_priors()
    assert train_main(["-opt", str(DEMO), "--set", *overrides]) == 0
    return root


def _losses(root: Path) -> list[dict]:
    records = read_jsonl(root / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k != "sec_per_iter"} for r in records if "l_total" in r]


def test_a_demo_run_repeats_bit_for_bit_with_its_threads_pinned(tmp_path: Path):
    pinned = load_yaml(DEMO)["num_threads"]
    assert pinned == load_yaml(DEMO.with_name("dehaze_demo_l2.yml"))["num_threads"]
    torch.set_num_threads(2)
    first = _demo_run(tmp_path, "first")
    assert torch.get_num_threads() == pinned  # the option, not the caller's setting, decides
    torch.set_num_threads(2)
    second = _demo_run(tmp_path, "second")
    a = torch.load(first / "models" / "net_g_latest.pth", map_location="cpu")["params"]
    b = torch.load(second / "models" / "net_g_latest.pth", map_location="cpu")["params"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = _losses(first)
    assert logged[-1]["l_diffloss"] > 0 and logged[-1]["grad_share_diffloss"] > 0
    assert logged == _losses(second)  # every logged loss and grad share, exactly
    env = json.loads((first / "environment.json").read_text())
    assert env["torch_threads"] == pinned
    assert env["packages"]["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    clear_shared_priors()


def test_the_demo_comparison_records_and_checks_the_environment():
    compare = load_script("compare_demo")
    env = {
        "torch_threads": 1,
        "cpu_capability": "AVX2",
        "cpu_model": "CPU X",
        "packages": {"torch": "2.13.0", "numpy": "2.4.6"},
    }
    line = compare.environment_line([env, dict(env)])
    assert "1 torch thread(s)" in line and "CPU X (AVX2)" in line and "torch 2.13.0" in line
    assert "not comparable" not in line
    assert "differ in torch_threads" in compare.environment_line([env, {**env, "torch_threads": 2}])
    other = {**env, "packages": {"torch": "2.14.1", "numpy": "2.4.6"}}
    assert "package versions" in compare.environment_line([env, other])
    assert "not recorded" in compare.environment_line([None, None])
