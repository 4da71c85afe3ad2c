"""End-to-end training on generated data: outputs, exact resume, NaN policy, GAN, DDP, test.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import diffsr.test as test_script
from diffsr.train import main as train_main
from tests.helpers.fixtures import read_jsonl, train_options, write_options

REPO = Path(__file__).resolve().parents[1]


def _losses_by_iter(root: Path) -> dict[int, float]:
    records = [r for r in read_jsonl(root / "metrics.jsonl") if "l_total" in r]
    return {r["iter"]: r["l_total"] for r in records}


def test_training_writes_checkpoints_logs_and_metrics(tmp_path: Path):
    opt = train_options(tmp_path, ema_decay=0.9)
    path = write_options(tmp_path / "opt.yml", opt)
    assert train_main(["-opt", str(path)]) == 0
    root = Path(opt["path"]["experiments_root"])
    models = sorted(p.name for p in (root / "models").iterdir())
    assert models == ["net_g_3.pth", "net_g_6.pth", "net_g_best.pth", "net_g_latest.pth"]
    assert sorted(p.name for p in (root / "training_states").iterdir()) == ["3.state", "6.state"]
    saved = torch.load(root / "models" / "net_g_6.pth", map_location="cpu")
    assert set(saved) == {"params", "params_ema"}
    assert all(t.device.type == "cpu" for t in saved["params"].values())
    assert any(root.glob("train_run_*.log")) and any(root.glob("options_*.yml"))
    records = read_jsonl(root / "metrics.jsonl")
    assert [r["iter"] for r in records if "l_total" in r] == [1, 2, 3, 4, 5, 6]
    val = [r for r in records if "psnr" in r]
    assert [r["iter"] for r in val] == [3, 6] and all(np.isfinite(r["psnr"]) for r in val)
    assert any((root / "visualization").rglob("*_6.png"))


def test_validation_psnr_matches_an_independent_computation(tmp_path: Path):
    opt = train_options(tmp_path, total_iter=3)
    opt["val"]["val_freq"] = 3
    path = write_options(tmp_path / "opt.yml", opt)
    train_main(["-opt", str(path)])
    root = Path(opt["path"]["experiments_root"])
    logged = [r for r in read_jsonl(root / "metrics.jsonl") if "psnr" in r][-1]["psnr"]
    values = []
    for restored in sorted((root / "visualization").rglob("*_3.png")):
        gt = cv2.imread(str(tmp_path / "val" / "gt" / f"{restored.parent.name}.png")).astype(
            np.float64
        )
        mse = np.mean((cv2.imread(str(restored)).astype(np.float64) - gt) ** 2)
        values.append(10 * np.log10(255.0**2 / mse))
    assert len(values) == 2
    assert logged == pytest.approx(np.mean(values), rel=1e-9)


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path):
    straight = train_options(tmp_path / "a", name="straight")
    write_options(tmp_path / "straight.yml", straight)
    train_main(["-opt", str(tmp_path / "straight.yml")])

    resumed = train_options(tmp_path / "b", name="resumed")
    write_options(tmp_path / "resumed.yml", resumed)
    train_main(
        ["-opt", str(tmp_path / "resumed.yml"), "--set", "train.total_iter=3"]
    )  # "killed" at 3
    train_main(
        [
            "-opt",
            str(tmp_path / "resumed.yml"),
            "--auto_resume",
            "--set",
            "datasets.train.num_worker_per_gpu=1",
        ]
    )

    a = _losses_by_iter(Path(straight["path"]["experiments_root"]))
    b = _losses_by_iter(Path(resumed["path"]["experiments_root"]))
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for it in range(1, 7):
        assert b[it] == a[it], f"iteration {it}: {b[it]} != {a[it]}"


def test_a_different_seed_changes_the_losses(tmp_path: Path):
    """Guards the resume test: equal losses must come from equal state, not from constant data."""
    one = train_options(tmp_path / "a", name="one")
    two = train_options(tmp_path / "b", name="two")
    two["manual_seed"] = 8
    for opt, name in ((one, "one"), (two, "two")):
        train_main(
            [
                "-opt",
                str(write_options(tmp_path / f"{name}.yml", opt)),
                "--set",
                "train.total_iter=2",
            ]
        )
    a = _losses_by_iter(Path(one["path"]["experiments_root"]))
    b = _losses_by_iter(Path(two["path"]["experiments_root"]))
    assert a[2] != b[2]


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_loss_policy(tmp_path: Path, policy: str):
    opt = train_options(tmp_path, total_iter=2, nan_policy=policy)
    opt["train"]["optim_g"]["lr"] = 1e30  # the first step blows the weights up
    opt["val"]["val_freq"] = 100
    path = write_options(tmp_path / "opt.yml", opt)
    if policy == "stop":
        with pytest.raises(
            FloatingPointError, match=r"Iteration 2: the loss is not finite.*nan_policy: skip"
        ):
            train_main(["-opt", str(path)])
    else:
        assert train_main(["-opt", str(path)]) == 0
        records = read_jsonl(Path(opt["path"]["experiments_root"]) / "metrics.jsonl")
        assert [r.get("skipped") for r in records if "l_total" in r] == [None, 1.0]


def test_bad_option_file_exits_with_message(tmp_path: Path, capsys):
    opt = train_options(tmp_path)
    opt["train"]["totl_iter"] = 5
    assert train_main(["-opt", str(write_options(tmp_path / "bad.yml", opt))]) == 2
    assert "unknown key 'train.totl_iter'" in capsys.readouterr().err


def test_gan_model_alternates_updates(tmp_path: Path):
    opt = train_options(tmp_path, total_iter=2)
    opt["model_type"] = "RestorationGANModel"
    opt["network_d"] = {"type": "PatchDiscriminator", "num_feat": 8, "num_layers": 2}
    opt["train"]["gan_opt"] = {"type": "GANLoss", "gan_type": "vanilla", "loss_weight": 0.005}
    opt["train"]["l1_opt"] = {"type": "L1Loss", "loss_weight": 0.5}
    opt["val"]["val_freq"] = 100
    assert train_main(["-opt", str(write_options(tmp_path / "gan.yml", opt))]) == 0
    root = Path(opt["path"]["experiments_root"])
    records = [r for r in read_jsonl(root / "metrics.jsonl") if "l_total" in r]
    assert all({"l_gan", "l_d_real", "l_d_fake", "l_pixel", "l_l1"} <= set(r) for r in records)
    # the generator's loss terms also report their gradient share against the pixel term
    assert records and all(r["grad_share_l1"] > 0 for r in records)  # net_d_init_iters is 0
    assert (root / "models" / "net_d_latest.pth").is_file()


def test_test_script_writes_per_image_and_mean_metrics(tmp_path: Path):
    opt = train_options(tmp_path, total_iter=2)
    train_main(["-opt", str(write_options(tmp_path / "opt.yml", opt))])
    weights = Path(opt["path"]["experiments_root"]) / "models" / "net_g_latest.pth"
    test_opt = {
        "name": "tiny_test",
        "imports": opt["imports"],
        "device": "cpu",
        "datasets": {"test_1": {**opt["datasets"]["val"], "name": "tinyset"}},
        "network_g": opt["network_g"],
        "path": {"pretrain_network_g": str(weights), "results_root": str(tmp_path / "results")},
        "val": {"metrics": opt["val"]["metrics"]},
    }
    assert test_script.main(["-opt", str(write_options(tmp_path / "test.yml", test_opt))]) == 0
    csv_lines = (tmp_path / "results" / "tinyset_metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "image,psnr,ssim" and csv_lines[-1].startswith("mean,")
    per_image = [float(line.split(",")[1]) for line in csv_lines[1:-1]]
    assert float(csv_lines[-1].split(",")[1]) == pytest.approx(np.mean(per_image), abs=1e-5)
    assert len(list((tmp_path / "results" / "visualization" / "tinyset").glob("*.png"))) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun test uses Linux process groups")
def test_ddp_with_two_cpu_processes(tmp_path: Path):
    opt = train_options(tmp_path, total_iter=4)
    opt["val"]["val_freq"] = 4
    path = write_options(tmp_path / "ddp.yml", opt)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        str(REPO / "diffsr" / "train.py"),
        "-opt",
        str(path),
        "--launcher",
        "pytorch",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    root = Path(opt["path"]["experiments_root"])
    records = read_jsonl(root / "metrics.jsonl")
    assert [r["iter"] for r in records if "l_total" in r] == [1, 2, 3, 4]  # rank 0 only
    assert (root / "models" / "net_g_latest.pth").is_file()
    assert "2 process(es)" in next(root.glob("train_*.log")).read_text()


def test_tensorboard_logging_writes_events(tmp_path: Path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the test extra of setup.py")
    opt = train_options(tmp_path, total_iter=2)
    opt["logger"]["use_tb_logger"] = True
    opt["val"]["val_freq"] = 2
    assert train_main(["-opt", str(write_options(tmp_path / "tb.yml", opt))]) == 0
    events = list(
        (Path(opt["path"]["experiments_root"]) / "tb_logger").glob("events.out.tfevents.*")
    )
    assert events and events[0].stat().st_size > 0


def test_mixed_precision_and_gradient_clipping_train(tmp_path: Path):
    opt = train_options(
        tmp_path, total_iter=2, amp=True, amp_dtype="bfloat16", grad_clip=0.5, warmup_iter=2
    )
    opt["val"]["val_freq"] = 2
    assert train_main(["-opt", str(write_options(tmp_path / "amp.yml", opt))]) == 0
    records = [
        r
        for r in read_jsonl(Path(opt["path"]["experiments_root"]) / "metrics.jsonl")
        if "l_total" in r
    ]
    assert [r["lr"] for r in records] == pytest.approx([0.5e-3, 1e-3])  # linear warm-up
    assert all(np.isfinite(r["l_total"]) for r in records)
