"""diffsr inside BasicSR (run by scripts/test_basicsr_plugin.sh in its own virtual env).

BasicSR's own training pipeline trains a BasicSR network with diffsr's DiffLoss registered
through ``diffsr.integrations.basicsr``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from basicsr.models import build_model

import diffsr.integrations.basicsr  # noqa: F401
from tests.helpers.fixtures import TINY_PRIOR_UNET

REPO = Path(__file__).resolve().parents[1]


def make_sr_pairs(root: Path, count: int = 6, size: int = 32, scale: int = 2) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    gt_dir, lq_dir = root / "gt", root / "lq"
    gt_dir.mkdir(parents=True)
    lq_dir.mkdir(parents=True)
    for i in range(count):
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        gt = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255)
        lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(gt_dir / f"{i:03d}.png"), gt.round().astype(np.uint8))
        cv2.imwrite(str(lq_dir / f"{i:03d}.png"), lq.round().astype(np.uint8))
    return gt_dir, lq_dir


def basicsr_options(root: Path, pixel_weight: float = 1.0) -> dict:
    gt_dir, lq_dir = make_sr_pairs(root / "data")
    paired = {
        "type": "PairedImageDataset",
        "dataroot_gt": str(gt_dir),
        "dataroot_lq": str(lq_dir),
        "filename_tmpl": "{}",
        "io_backend": {"type": "disk"},
    }
    return {
        "name": "plugin_check",
        "model_type": "DiffLossSRModel",
        "scale": 2,
        "num_gpu": 0,
        "manual_seed": 0,
        "datasets": {
            "train": {
                **paired,
                "name": "tiny",
                "gt_size": 16,
                "use_hflip": True,
                "use_rot": True,
                "num_worker_per_gpu": 0,
                "batch_size_per_gpu": 2,
                "dataset_enlarge_ratio": 1,
                "prefetch_mode": None,
            },
            "val": {**paired, "name": "tiny_val"},
        },
        "network_g": {
            "type": "MSRResNet",
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": 8,
            "num_block": 1,
            "upscale": 2,
        },
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0.999,
            "optim_g": {"type": "Adam", "lr": 1e-3, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "total_iter": 3,
            "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": pixel_weight, "reduction": "mean"},
            "diffloss_opt": {
                "type": "DiffLoss",
                "loss_weight": 1.0,
                "lambda_sem": 0.01,
                "prior": {"unet": TINY_PRIOR_UNET},
            },
        },
        "val": {
            "val_freq": 3,
            "save_img": False,
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": False}
            },
        },
        "logger": {
            "print_freq": 1,
            "save_checkpoint_freq": 3,
            "use_tb_logger": False,
            "wandb": {"project": None, "resume_id": None},
        },
        "dist_params": {"backend": "nccl", "port": 29500},
    }


def test_diffloss_trains_a_basicsr_network_in_basicsr_pipeline(tmp_path: Path) -> None:
    opt_path = tmp_path / "train_plugin.yml"
    opt_path.write_text(yaml.safe_dump(basicsr_options(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "diffsr.integrations.basicsr_train", "-opt", str(opt_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    root = tmp_path / "experiments" / "plugin_check"
    log = "".join(p.read_text() for p in root.glob("train_plugin_check_*.log"))
    assert "l_diffloss:" in log and "l_diffloss_nat:" in log and "l_pix:" in log
    saved = torch.load(root / "models" / "net_g_3.pth", map_location="cpu", weights_only=True)
    keys = set(saved["params"])
    assert keys and not any("unet" in k or "prior" in k for k in keys)  # the prior is never saved
    assert keys == set(saved["params_ema"])


def test_diffloss_alone_moves_the_network(tmp_path: Path) -> None:
    """With the pixel loss weighted 0, every gradient comes from DiffLoss through the prior."""
    from basicsr.utils.options import parse_options  # noqa: F401  (BasicSR importable)

    opt = basicsr_options(tmp_path, pixel_weight=0.0)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, root_path=str(tmp_path))
    opt["path"].update(
        experiments_root=str(tmp_path / "exp"),
        models=str(tmp_path / "exp" / "models"),
        training_states=str(tmp_path / "exp" / "states"),
        log=str(tmp_path / "exp"),
        visualization=str(tmp_path / "exp" / "vis"),
    )
    opt["datasets"]["train"]["phase"] = "train"
    opt["datasets"]["train"]["scale"] = 2
    model = build_model(opt)
    assert model.cri_diffloss is not None
    torch.manual_seed(0)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    model.feed_data({"lq": lq, "gt": gt})
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.optimize_parameters(1)
    assert model.log_dict["l_pix"] == 0.0
    assert model.log_dict["l_diffloss"] > 0.0
    grads = [p.grad.abs().sum().item() for p in model.net_g.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0.0
    changed = [not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items()]
    assert any(changed)
    prior_params = list(model.cri_diffloss.prior.parameters())
    assert prior_params and all(not p.requires_grad for p in prior_params)
    assert not {id(p) for p in prior_params} & {
        id(p) for g in model.optimizer_g.param_groups for p in g["params"]
    }
