"""Small generated data sets and option files for the trainer tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

# A tiny ADM UNet for the diffusion-prior tests (DiffLoss, prior training, paper options).
TINY_PRIOR_UNET: dict[str, Any] = {
    "image_size": 16,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "8",
    "num_head_channels": 16,
    "learn_sigma": True,
}

# DiffusionPrior options of the tiny prior with a short schedule (T = 100).
TINY_PRIOR = {"unet": TINY_PRIOR_UNET, "diffusion_steps": 100}

TINY_ARCH_SOURCE = '''
import torch
import torch.nn as nn
from diffsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class TinyUserNet(nn.Module):
    """Defined outside the diffsr package; registered through the options' imports list."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
'''


def make_paired_folder(root: Path, count: int, size: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """``root/{lq,gt}/NNN.png``: gt smooth random images, lq = hazier copies."""
    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = root / "lq", root / "gt"
    lq_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
        gt = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        lq = 0.6 * gt + 0.4 * 0.9
        cv2.imwrite(str(gt_dir / f"{i:03d}.png"), (gt * 255).round().astype(np.uint8))
        cv2.imwrite(str(lq_dir / f"{i:03d}.png"), (lq * 255).round().astype(np.uint8))
    return lq_dir, gt_dir


def write_tiny_arch(folder: Path) -> Path:
    """One file per test session: a registered name may only be defined once per process."""
    del folder
    path = Path(tempfile.gettempdir()) / f"diffsr_tests_{os.getpid()}" / "tiny_user_arch.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TINY_ARCH_SOURCE)
    return path


def train_options(tmp: Path, name: str = "run", **train_overrides: Any) -> dict[str, Any]:
    """A complete option dict training TinyUserNet on generated data in ``tmp``."""
    train_lq, train_gt = make_paired_folder(tmp / "train", 8, seed=1)
    val_lq, val_gt = make_paired_folder(tmp / "val", 2, seed=2)
    arch = write_tiny_arch(tmp)
    train = {
        "optim_g": {"type": "Adam", "lr": 1e-3},
        "total_iter": 6,
        "pixel_opt": {"type": "MSELoss", "loss_weight": 1.0},
    }
    train.update(train_overrides)
    return {
        "name": name,
        "imports": [str(arch)],
        "device": "cpu",
        "manual_seed": 7,
        "datasets": {
            "train": {
                "name": "tiny",
                "type": "PairedImageDataset",
                "dataroot_lq": str(train_lq),
                "dataroot_gt": str(train_gt),
                "gt_size": 16,
                "use_hflip": True,
                "use_rot": True,
                "batch_size_per_gpu": 2,
                "num_worker_per_gpu": 0,
            },
            "val": {
                "name": "tiny_val",
                "type": "PairedImageDataset",
                "dataroot_lq": str(val_lq),
                "dataroot_gt": str(val_gt),
            },
        },
        "network_g": {"type": "TinyUserNet", "width": 8},
        "path": {"experiments_root": str(tmp / "experiments" / name)},
        "train": train,
        "val": {
            "val_freq": 3,
            "save_img": True,
            "pbar": False,
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 0},
                "ssim": {"type": "calculate_ssim", "crop_border": 0},
            },
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 3, "keep_last": 2},
    }


def write_options(path: Path, opt: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
