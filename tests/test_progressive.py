"""Restormer's progressive patch training and the forks' dataset keys (Dataset_PairedImage,
geometric_augs, FSDGN's gt_sizeH/gt_sizeW/use_flip/flag)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsr.data import DATASET_REGISTRY, build_dataset
from diffsr.data.progressive import ProgressiveSchedule
from diffsr.models.restoration_model import RestorationModel
from diffsr.train import main as train_main
from tests.helpers.fixtures import make_paired_folder, write_tiny_arch

# (mini_batch_sizes, iters, gt_sizes) of a three-phase schedule on batches of 4 at gt_size 16.
SCHEDULE = ([4, 3, 2], [2, 3, 1], [8, 12, 16])


def coded_batch(batch: int, size: int, scale: int = 1) -> dict:
    """lq[b, :, y, x] = 10000 b + 100 y + x; gt = lq repeated ``scale`` x ``scale``."""
    side = size // scale
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    code = torch.stack([10000 * b + 100 * yy + xx for b in range(batch)]).float()
    lq = code[:, None].expand(batch, 3, side, side).contiguous()
    gt = lq.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    return {"lq": lq, "gt": gt, "lq_path": [f"img{b}.png" for b in range(batch)]}


def decode(value: float) -> tuple[int, int, int]:
    """(sample, row, column) of a coded pixel value."""
    code = round(value)
    return code // 10000, code // 100 % 100, code % 100


def test_phase_boundaries_follow_the_cumulative_iters():
    schedule = ProgressiveSchedule(*SCHEDULE, batch_size=4, gt_size=16)
    phases = [schedule.phase(i) for i in range(1, 9)]
    assert phases == [0, 0, 1, 1, 1, 2, 2, 2]  # the last phase goes on past the end


@pytest.mark.parametrize("scale", [1, 2])
def test_batches_are_subsampled_and_cropped_per_phase(scale, caplog):
    schedule = ProgressiveSchedule(*SCHEDULE, batch_size=4, gt_size=16, scale=scale, seed=5)
    data = coded_batch(4, 16, scale)
    expected = {1: (4, 8), 3: (3, 12), 6: (2, 16), 9: (2, 16)}
    offsets = set()
    with caplog.at_level(logging.INFO, logger="diffsr"):
        for iteration, (batch, patch) in expected.items():
            out = schedule(data, iteration)
            assert out["gt"].shape == (batch, 3, patch, patch)
            assert out["lq"].shape == (batch, 3, patch // scale, patch // scale)
            samples = [decode(v)[0] for v in out["lq"][:, 0, 0, 0].tolist()]
            assert len(set(samples)) == batch and out["lq_path"] == [f"img{b}.png" for b in samples]
            # one offset for the whole batch, the GT at scale x the LQ position
            _, top, left = decode(out["lq"][0, 0, 0, 0].item())
            full = data["lq"][samples]
            lq_patch = patch // scale
            assert torch.equal(out["lq"], full[..., top : top + lq_patch, left : left + lq_patch])
            gt_full = data["gt"][samples]
            region = gt_full[..., top * scale : top * scale + patch, left * scale :][..., :patch]
            assert torch.equal(out["gt"], region)
            assert 0 <= top < max(1, (16 - patch) // scale) and 0 <= left < max(
                1, (16 - patch) // scale
            )
            offsets.add((iteration, top, left))
    assert data["lq"].shape == (4, 3, 16 // scale, 16 // scale)  # the input is not changed
    announced = [r.getMessage() for r in caplog.records if "Progressive" in r.getMessage()]
    assert len(announced) == 3 and "patch 12, batch 3" in announced[1]


def test_draws_depend_on_seed_rank_and_iteration_only():
    data = coded_batch(4, 16)

    def cut(seed=0, rank=0, iteration=3):
        schedule = ProgressiveSchedule(*SCHEDULE, batch_size=4, gt_size=16, seed=seed, rank=rank)
        return schedule(data, iteration)["lq"]

    assert torch.equal(cut(), cut())
    others = [cut(seed=1), cut(rank=1), cut(iteration=4)]
    assert all(not torch.equal(cut(), other) for other in others)
    # offsets are drawn uniformly among Restormer's positions 0 .. gt_size - patch - 1
    schedule = ProgressiveSchedule([1], [1000], [12], batch_size=1, gt_size=16)
    tops = {decode(schedule(coded_batch(1, 16), i)["lq"][0, 0, 0, 0].item())[1] for i in range(200)}
    assert tops == {0, 1, 2, 3}


def paired_block(tmp_path: Path, phase: str = "train", **extra) -> dict:
    lq, gt = make_paired_folder(tmp_path / "data", 3, size=20)
    return {
        "name": "p",
        "type": "Dataset_PairedImage",
        "phase": phase,
        "dataroot_lq": str(lq),
        "dataroot_gt": str(gt),
        **extra,
    }


def test_progressive_key_errors(tmp_path):
    good = {"mini_batch_sizes": [2, 1], "iters": [2, 2], "gt_sizes": [8, 16], "gt_size": 16}
    build_dataset(paired_block(tmp_path, **good))
    cases = {
        "together; iters missing": {**good, "iters": None},
        "one entry per phase": {**good, "iters": [2]},
        r"exceed gt_size 16.*raise gt_size to max\(gt_sizes\) = 20": {**good, "gt_sizes": [8, 20]},
        "needs gt_size": {k: v for k, v in good.items() if k != "gt_size"},
        "integers >= 1": {**good, "iters": [2, 0]},
        "belong to the train dataset": {**good, "phase": "val"},
    }
    for message, extra in cases.items():
        block = paired_block(tmp_path, **extra)
        if block.get("iters", 1) is None:
            del block["iters"]
        with pytest.raises(ValueError, match=message):
            build_dataset(block)
    with pytest.raises(ValueError, match="not multiples of scale 2"):
        build_dataset({**paired_block(tmp_path, **good), "gt_sizes": [7, 16], "scale": 2})
    with pytest.raises(ValueError, match=r"exceed batch_size_per_gpu 2.*= 3"):
        ProgressiveSchedule([3, 1], [1, 1], [8, 16], batch_size=2, gt_size=16)


def test_dataset_paired_image_is_restormers_dataset(tmp_path):
    """Dataset_PairedImage: geometric_augs draws all 8 flips/rotations evenly; small images are
    padded as Restormer pads them (mirrored with the edge row repeated)."""
    assert DATASET_REGISTRY.get("Dataset_PairedImage").__name__ == "RestormerPairedImageDataset"
    block = paired_block(tmp_path, gt_size=20, geometric_augs=True, filename_tmpl="{}")
    dataset = build_dataset(block, seed=3)
    original = build_dataset({**block, "phase": "val"})[0]["gt"]
    variants = [
        torch.rot90(t, k, dims=(1, 2)) for t in (original, original.flip(1)) for k in range(4)
    ]
    counts = np.zeros(8, int)
    for index in range(0, 3 * 160, 3):
        sample = dataset[index]
        [match] = [i for i, v in enumerate(variants) if torch.equal(sample["gt"], v)]
        counts[match] += 1
    assert counts.min() > 8 and counts.sum() == 160  # all 8, about 20 each
    still = build_dataset({**block, "geometric_augs": False})[0]["gt"]
    assert torch.equal(still, original)

    padded = build_dataset(paired_block(tmp_path, gt_size=24))[0]  # 20 x 20 images
    whole = build_dataset(paired_block(tmp_path, "val"))[0]["lq"]
    assert padded["lq"].shape == (3, 24, 24)
    expected = torch.cat([whole, whole.flip(1)[:, :4]], 1)  # rows 19, 18, 17, 16 repeat
    expected = torch.cat([expected, expected.flip(2)[:, :, :4]], 2)
    assert torch.equal(padded["lq"], expected)
    with pytest.raises(ValueError, match=r"geometric_augs.*replaces use_hflip/use_rot"):
        build_dataset(paired_block(tmp_path, geometric_augs=True, use_rot=True))


def test_fsdgn_keys_do_what_they_do_in_fsdgn(tmp_path, caplog):
    """gt_sizeH/gt_sizeW crop train and val images; use_flip flips; flag does nothing."""
    block = {**paired_block(tmp_path), "type": "PairedImageDataset"}
    fsdgn = {**block, "gt_sizeH": 8, "gt_sizeW": 12, "use_flip": True, "use_rot": False}
    with caplog.at_level(logging.INFO, logger="diffsr"):
        train = build_dataset({**fsdgn, "flag": False}, seed=4)
    assert any("'flag' (FSDGN) has no effect" in r.getMessage() for r in caplog.records)
    basicsr = build_dataset(
        {**block, "gt_sizeH": 8, "gt_sizeW": 12, "use_hflip": True, "use_rot": False}, seed=4
    )
    for index in range(6):  # use_flip is use_hflip; flag changes nothing
        assert train[index]["gt"].shape == (3, 8, 12)
        assert torch.equal(train[index]["gt"], basicsr[index]["gt"])
    flips = {torch.equal(train[i]["gt"], basicsr[i]["gt"]) for i in range(6)}
    assert flips == {True}
    val = build_dataset({**fsdgn, "phase": "val", "flag": True})
    assert val[0]["lq"].shape == (3, 8, 12)
    whole_lq = build_dataset({**block, "phase": "val"})[0]["lq"]
    crop = val[0]["lq"]
    assert any(
        torch.equal(crop, whole_lq[:, t : t + 8, l : l + 12]) for t in range(13) for l in range(9)
    )
    with pytest.raises(ValueError, match=r"gt_sizeH and gt_sizeW .* go together"):
        build_dataset({**block, "gt_sizeH": 8})
    with pytest.raises(ValueError, match=r"either gt_size .* or gt_sizeH/gt_sizeW"):
        build_dataset({**block, "gt_sizeH": 8, "gt_sizeW": 8, "gt_size": 8})
    with pytest.raises(ValueError, match=r"either use_hflip .* or use_flip"):
        build_dataset({**block, "use_flip": True, "use_hflip": True})


RESTORMER_OPTIONS = """\
# A Restormer-style option file (progressive patch training), on tiny generated data.
name: {name}
model_type: ImageCleanModel
scale: 1
num_gpu: 0
manual_seed: 100
imports: [{arch}]
device: cpu

datasets:
  train:
    name: TrainSet
    type: Dataset_PairedImage
    dataroot_gt: {gt}
    dataroot_lq: {lq}
    geometric_augs: true
    filename_tmpl: '{{}}'
    io_backend:
      type: disk
    use_shuffle: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    ### -------------Progressive training--------------------------
    mini_batch_sizes: [2, 1]
    iters: [3, 1]
    gt_size: 16
    gt_sizes: [8, 16]
    ### ------------------------------------------------------------
    dataset_enlarge_ratio: 1
    prefetch_mode: ~

  val:
    name: ValSet
    type: Dataset_PairedImage
    dataroot_gt: {gt}
    dataroot_lq: {lq}
    io_backend:
      type: disk

network_g:
  type: TinyUserNet
  width: 8

path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~
  experiments_root: {root}

train:
  total_iter: {total_iter}
  warmup_iter: -1
  use_grad_clip: true
  scheduler:
    type: CosineAnnealingRestartCyclicLR
    periods: [2, 2]
    restart_weights: [1, 1]
    eta_mins: [0.0003, 0.000001]
  optim_g:
    type: AdamW
    lr: !!float 3e-4
    weight_decay: !!float 1e-4
    betas: [0.9, 0.999]
  pixel_opt:
    type: L1Loss
    loss_weight: 1
    reduction: mean

val:
  window_size: 8
  val_freq: !!float 4
  save_img: false
  rgb2bgr: true
  use_image: true
  max_minibatch: 8
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 0
      test_y_channel: false

logger:
  print_freq: 1
  save_checkpoint_freq: !!float 2
  use_tb_logger: false
  wandb:
    project: ~
    resume_id: ~

dist_params:
  backend: nccl
  port: 29500
"""


def restormer_file(tmp_path: Path, name: str, total_iter: int) -> Path:
    lq, gt = make_paired_folder(tmp_path / "data", 4, size=20)
    text = RESTORMER_OPTIONS.format(
        name=name,
        arch=write_tiny_arch(tmp_path),
        gt=gt,
        lq=lq,
        root=tmp_path / name,
        total_iter=total_iter,
    )
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    return path


@pytest.fixture()
def fed_batches(monkeypatch) -> list[torch.Tensor]:
    """The LQ batch of every optimisation step, in order."""
    fed: list[torch.Tensor] = []
    original = RestorationModel.optimize_parameters

    def record(self, current_iter):
        fed.append(self.lq.clone())
        return original(self, current_iter)

    monkeypatch.setattr(RestorationModel, "optimize_parameters", record)
    return fed


def test_restormer_progressive_option_file_trains_and_resumes_exactly(tmp_path, fed_batches):
    straight = restormer_file(tmp_path, "straight", total_iter=4)
    assert train_main(["-opt", str(straight)]) == 0
    assert [tuple(b.shape) for b in fed_batches] == [(2, 3, 8, 8)] * 3 + [(1, 3, 16, 16)]
    uninterrupted = list(fed_batches)

    fed_batches.clear()
    resumed = restormer_file(tmp_path, "resumed", total_iter=4)
    assert train_main(["-opt", str(resumed), "--set", "train.total_iter=2"]) == 0  # "killed"
    assert train_main(["-opt", str(resumed), "--auto_resume"]) == 0
    assert len(fed_batches) == 4
    for iteration, (a, b) in enumerate(zip(uninterrupted, fed_batches), start=1):
        # iteration 3 resumes inside the first phase (a random crop), 4 subsamples the batch
        assert torch.equal(a, b), f"iteration {iteration} differs after resuming"
