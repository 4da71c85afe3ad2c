"""Super-resolution data (scale > 1): aligned crops, size errors, validation, test and tiling.

The pairs are built so that GT = LQ upsampled by pixel repetition: every GT patch must then be
the repetition of its LQ patch, and a misplaced crop (or a crop at the wrong scale) shows.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import diffsr.test as test_script
from diffsr.data import build_dataset
from diffsr.data.lmdb_convert import paired_folders_to_lmdb
from diffsr.train import main as train_main
from diffsr.utils.tiling import TileOptions
from tests.helpers.fixtures import TINY_PRIOR_UNET, read_jsonl, write_options
from tests.helpers.scripts import load_script

SR_ARCH_SOURCE = '''
import torch.nn as nn
from diffsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class TinyShuffleSR(nn.Module):
    """conv -> PixelShuffle: B x 3 x h x w -> B x 3 x (s h) x (s w)."""

    def __init__(self, num_feat: int = 8, upscale: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, num_feat, 3, padding=1), nn.ReLU(),
            nn.Conv2d(num_feat, 3 * upscale**2, 3, padding=1), nn.PixelShuffle(upscale),
        )

    def forward(self, x):
        return self.body(x)
'''


def sr_arch_file() -> Path:
    """Written once per process (a registered name may be defined only once)."""
    path = Path(tempfile.gettempdir()) / f"diffsr_sr_tests_{os.getpid()}" / "tiny_shuffle_sr.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SR_ARCH_SOURCE)
    return path


def make_sr_pairs(
    root: Path, count: int, lq_hw: tuple[int, int], scale: int, seed: int = 0, smooth=False
) -> tuple[Path, Path]:
    """``root/{lq,gt}/NNN.png``: random LQ, GT = LQ with every pixel repeated scale x scale."""
    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = root / "lq", root / "gt"
    lq_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if smooth:
            small = rng.uniform(0, 255, (3, 3, 3))
            lq = cv2.resize(small, lq_hw[::-1], interpolation=cv2.INTER_LINEAR)
            lq = lq.round().astype(np.uint8)
        else:
            lq = rng.integers(0, 256, (*lq_hw, 3), dtype=np.uint8)
        gt = lq.repeat(scale, 0).repeat(scale, 1)
        assert cv2.imwrite(str(lq_dir / f"{i:03d}.png"), lq)
        assert cv2.imwrite(str(gt_dir / f"{i:03d}.png"), gt)
    return lq_dir, gt_dir


def block(lq, gt, phase="train", **extra) -> dict:
    return {
        "name": "sr",
        "type": "PairedImageDataset",
        "phase": phase,
        "dataroot_lq": str(lq),
        "dataroot_gt": str(gt),
        **extra,
    }


def locate(patch: np.ndarray, image: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where ``patch`` (h x w x c) occurs in ``image``."""
    h, w = patch.shape[:2]
    return [
        (top, left)
        for top in range(image.shape[0] - h + 1)
        for left in range(image.shape[1] - w + 1)
        if np.array_equal(image[top : top + h, left : left + w], patch)
    ]


def as_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("backend", ["disk", "lmdb"])
def test_sr_crop_takes_the_gt_patch_at_scale_times_the_lq_position(tmp_path, scale, backend):
    lq_dir, gt_dir = make_sr_pairs(tmp_path / "data", 3, (10, 13), scale)
    if backend == "lmdb":
        lq_dir, gt_dir = tmp_path / "lq.lmdb", tmp_path / "gt.lmdb"
        paired_folders_to_lmdb(
            tmp_path / "data" / "lq", tmp_path / "data" / "gt", lq_dir, gt_dir, progress=False
        )
    gt_size = 4 * scale
    plain = build_dataset(
        block(lq_dir, gt_dir, gt_size=gt_size, scale=scale, io_backend={"type": backend}), seed=1
    )
    whole = build_dataset(block(lq_dir, gt_dir, "val", scale=scale, io_backend={"type": backend}))
    corners = set()
    for index in range(12):
        sample, full = plain[index], whole[index % 3]
        assert sample["lq"].shape == (3, 4, 4) and sample["gt"].shape == (3, gt_size, gt_size)
        assert full["gt"].shape[1:] == (10 * scale, 13 * scale)
        [(top, left)] = locate(as_hwc(sample["lq"]), as_hwc(full["lq"]))
        gt_region = full["gt"][:, top * scale : top * scale + gt_size, left * scale :][
            ..., :gt_size
        ]
        assert torch.equal(sample["gt"], gt_region)
        corners.add((top, left))
    assert len(corners) > 3  # the position is random
    augmented = build_dataset(
        block(
            lq_dir,
            gt_dir,
            gt_size=gt_size,
            scale=scale,
            use_hflip=True,
            use_rot=True,
            io_backend={"type": backend},
        ),
        seed=2,
    )
    for index in range(12):
        sample = augmented[index]
        upsampled = sample["lq"].repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        assert torch.equal(sample["gt"], upsampled)


def test_fsdgn_rectangular_crop_at_scale_2_in_train_and_val(tmp_path):
    lq_dir, gt_dir = make_sr_pairs(tmp_path, 2, (9, 12), 2)
    for phase in ("train", "val"):
        dataset = build_dataset(
            block(lq_dir, gt_dir, phase, scale=2, gt_sizeH=8, gt_sizeW=14, use_flip=False)
        )
        sample, again = dataset[1], dataset[1]
        assert sample["lq"].shape == (3, 4, 7) and sample["gt"].shape == (3, 8, 14)
        upsampled = sample["lq"].repeat_interleave(2, 1).repeat_interleave(2, 2)
        assert torch.equal(sample["gt"], upsampled)
        assert torch.equal(sample["lq"], again["lq"])  # same place at every validation
    test = build_dataset(block(lq_dir, gt_dir, "test", scale=2, gt_sizeH=8, gt_sizeW=14))
    assert test[0]["lq"].shape == (3, 9, 12)  # FSDGN crops in train and val only


def test_sr_size_errors_name_the_files_and_the_fix(tmp_path):
    lq_dir, gt_dir = make_sr_pairs(tmp_path / "x2", 1, (6, 8), 2)
    with pytest.raises(ValueError, match=r"000\.png is 6x8.*is 12x16; expected GT 3 times"):
        build_dataset(block(lq_dir, gt_dir, "val", scale=3))[0]
    with pytest.raises(ValueError, match=r"smaller than the crop \(GT patch 16x16, LQ patch 8x8"):
        build_dataset(block(lq_dir, gt_dir, scale=2, gt_size=16))[0]
    with pytest.raises(ValueError, match=r"gt_size 9 must be a multiple of scale 2.*gt_size 8"):
        build_dataset(block(lq_dir, gt_dir, scale=2, gt_size=9))
    with pytest.raises(ValueError, match="gt_sizeW 7 must be a multiple of scale 2"):
        build_dataset(block(lq_dir, gt_dir, scale=2, gt_sizeH=4, gt_sizeW=7))
    with pytest.raises(ValueError, match="scale 3 differs from the top-level scale 2"):
        build_dataset(block(lq_dir, gt_dir, scale=3), scale=2)


def test_top_level_scale_reaches_the_dataset(tmp_path):
    lq_dir, gt_dir = make_sr_pairs(tmp_path, 1, (6, 8), 2)
    dataset = build_dataset(block(lq_dir, gt_dir, "val"), scale=2)
    assert dataset.opt.scale == 2 and dataset[0]["gt"].shape == (3, 12, 16)
    assert build_dataset(block(lq_dir, gt_dir, "val", scale=2), scale=1).opt.scale == 2
    with pytest.raises(ValueError, match="expected GT the same size"):
        build_dataset(block(lq_dir, gt_dir, "val"))[0]


def test_tiled_restore_at_scale_2_equals_the_whole_image():
    upsample = torch.nn.Upsample(scale_factor=2, mode="nearest")
    lq = torch.rand(1, 3, 21, 30)
    tiled = test_script.restore(upsample, lq, TileOptions(size=8, overlap=3))
    assert torch.equal(tiled, upsample(lq))
    shrinking = torch.nn.AvgPool2d(2)
    with pytest.raises(ValueError, match="same integer scale"):
        test_script.restore(shrinking, lq, TileOptions(size=8, overlap=3))


def sr_train_options(tmp: Path) -> dict:
    train_lq, train_gt = make_sr_pairs(tmp / "train", 4, (12, 12), 2, seed=1, smooth=True)
    val_lq, val_gt = make_sr_pairs(tmp / "val", 2, (10, 14), 2, seed=2, smooth=True)
    return {
        "name": "sr_x2",
        "scale": 2,
        "imports": [str(sr_arch_file())],
        "device": "cpu",
        "manual_seed": 3,
        "datasets": {
            "train": {
                **block(train_lq, train_gt, gt_size=16, use_hflip=True, use_rot=True),
                "batch_size_per_gpu": 2,
                "num_worker_per_gpu": 0,
            },
            "val": {**block(val_lq, val_gt, "val"), "name": "sr_val"},
        },
        "network_g": {"type": "TinyShuffleSR", "num_feat": 8, "upscale": 2},
        "path": {"experiments_root": str(tmp / "experiments" / "sr_x2")},
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-3},
            "total_iter": 2,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0},
            "diffloss_opt": {
                "type": "DiffLoss",
                "loss_weight": 0.1,
                "prior": {"unet": TINY_PRIOR_UNET, "diffusion_steps": 100},
            },
        },
        "val": {
            "val_freq": 2,
            "save_img": True,
            "pbar": False,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}},
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2},
    }


def psnr_with_border(img: np.ndarray, ref: np.ndarray, border: int) -> float:
    """PSNR (dB) of uint8 images after cutting ``border`` pixels off each side."""
    a = img[border:-border, border:-border].astype(np.float64)
    b = ref[border:-border, border:-border].astype(np.float64)
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def test_sr_training_with_diffloss_then_validation_test_and_batch_test(tmp_path):
    """x2 SR: DiffLoss on the SR output vs HR (2 iterations), validation with crop_border, then
    diffsr/test.py (whole and tiled) and scripts/batch_test.py --scale 2 on the result."""
    opt = sr_train_options(tmp_path)
    assert train_main(["-opt", str(write_options(tmp_path / "sr.yml", opt))]) == 0
    root = Path(opt["path"]["experiments_root"])
    records = read_jsonl(root / "metrics.jsonl")
    steps = [r for r in records if "l_total" in r]
    assert [r["iter"] for r in steps] == [1, 2]
    assert all(np.isfinite(r["l_diffloss"]) and r["l_diffloss"] != 0 for r in steps)
    [val] = [r for r in records if r.get("val_set") == "sr_val"]
    outputs, refs = [], []
    for index in range(2):
        out = cv2.imread(str(root / "visualization" / f"{index:03d}" / f"{index:03d}_2.png"))
        ref = cv2.imread(str(tmp_path / "val" / "gt" / f"{index:03d}.png"))
        assert out.shape == ref.shape == (20, 28, 3)
        outputs.append(out)
        refs.append(ref)
    expected = np.mean([psnr_with_border(o, r, 2) for o, r in zip(outputs, refs)])
    assert val["psnr"] == pytest.approx(expected, abs=1e-6)

    weights = root / "models" / "net_g_latest.pth"
    test_opt = {
        "name": "sr_test",
        "scale": 2,
        "imports": opt["imports"],
        "device": "cpu",
        "datasets": {"test_1": {**opt["datasets"]["val"], "name": "srset"}},
        "network_g": opt["network_g"],
        "path": {"pretrain_network_g": str(weights), "results_root": str(tmp_path / "res")},
        "val": {"metrics": opt["val"]["metrics"]},
    }
    del test_opt["datasets"]["test_1"]["phase"]
    test_file = write_options(tmp_path / "test.yml", test_opt)
    assert test_script.main(["-opt", str(test_file)]) == 0
    tiled_opt = copy.deepcopy(test_opt)
    tiled_opt["path"]["results_root"] = str(tmp_path / "res_tiled")
    tiled_file = write_options(tmp_path / "tiled.yml", tiled_opt)
    assert test_script.main(["-opt", str(tiled_file), "--tile", "6", "--tile-overlap", "2"]) == 0
    for index in range(2):
        restored = cv2.imread(
            str(tmp_path / "res" / "visualization" / "srset" / f"{index:03d}.png")
        )
        assert np.array_equal(restored, outputs[index])  # the model validation saw
        tiled = cv2.imread(
            str(tmp_path / "res_tiled" / "visualization" / "srset" / f"{index:03d}.png")
        )
        assert tiled.shape == (20, 28, 3)
        # Blended tiles of a 3 x 3 conv net: close to the whole image (differences where the
        # tiles' zero padding reaches); test_tiled_restore_at_scale_2_equals_the_whole_image
        # checks exact equality with a pixel-wise net.
        assert np.abs(tiled.astype(int) - restored).mean() < 3
    mean_line = (tmp_path / "res" / "srset_metrics.csv").read_text().splitlines()[-1]
    assert float(mean_line.split(",")[1]) == pytest.approx(expected, abs=1e-5)

    batch_test = load_script("batch_test")
    out = tmp_path / "batch"
    status = batch_test.main(
        [
            "--lq", str(tmp_path / "val" / "lq"), "--gt", str(tmp_path / "val" / "gt"),
            "--scale", "2", "--arch", "TinyShuffleSR", "--import", str(sr_arch_file()),
            "--ckpt", f"x2={weights}", "--crop-border", "2", "--metrics", "psnr",
            "--out", str(out), "--device", "cpu",
        ]
    )  # fmt: skip
    assert status == 0
    assert cv2.imread(str(out / "x2" / "000.png")).shape == (20, 28, 3)
    mean_line = (out / "metrics.csv").read_text().splitlines()[-1]
    assert float(mean_line.split(",")[1]) == pytest.approx(expected, abs=1e-5)
