"""scripts/make_demo_data.py on a tiny size: layout, LMDB twins, haze model, idempotence."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffsr.data import build_dataset

pytest.importorskip("skimage")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_data.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_demo_data_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_script()
TINY = ["--num-train", "6", "--num-val", "2", "--size", "32"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_haze"
    assert demo.main(["--out", str(out), *TINY]) == 0
    return out


def test_layout_and_lmdb_twins(demo_root):
    for split, count in (("train", 6), ("val", 2)):
        hazy = sorted(p.name for p in (demo_root / split / "hazy").iterdir())
        clear = sorted(p.name for p in (demo_root / split / "clear").iterdir())
        assert hazy == clear and len(hazy) == count
        disk = build_dataset(
            {
                "type": "PairedImageDataset",
                "phase": "val",
                "dataroot_lq": str(demo_root / split / "hazy"),
                "dataroot_gt": str(demo_root / split / "clear"),
            }
        )
        lmdb_set = build_dataset(
            {
                "type": "PairedImageDataset",
                "phase": "val",
                "dataroot_lq": str(demo_root / f"{split}_hazy.lmdb"),
                "dataroot_gt": str(demo_root / f"{split}_clear.lmdb"),
                "io_backend": {"type": "lmdb"},
            }
        )
        for i in range(count):
            assert disk[i]["lq"].shape == (3, 32, 32)
            assert torch.equal(disk[i]["lq"], lmdb_set[i]["lq"])
            assert torch.equal(disk[i]["gt"], lmdb_set[i]["gt"])


def test_hazy_images_follow_the_scattering_model(demo_root):
    """Per pixel I - A = t (J - A) with one t for all channels, so channel differences give
    t = (I_r - I_b) / (J_r - J_b); then A = (I - J t) / (1 - t). Both must lie in the ranges
    of the model: t in [exp(-1.8 * 1.2), exp(-0.6 * 0.2)], A in [0.7, 1]."""
    checked = 0
    for path in sorted((demo_root / "train" / "clear").glob("*.png")):
        clear = cv2.imread(str(path)).astype(np.float64) / 255.0
        hazy = cv2.imread(str(demo_root / "train" / "hazy" / path.name)).astype(np.float64) / 255
        diff_j = clear[:, :, 2] - clear[:, :, 0]
        strong = np.abs(diff_j) > 0.25
        if strong.sum() < 20:
            continue
        t = (hazy[:, :, 2] - hazy[:, :, 0])[strong] / diff_j[strong]
        assert np.exp(-1.8 * 1.2) - 0.03 <= np.median(t) <= np.exp(-0.6 * 0.2) + 0.03
        t_med = np.clip(t, 0.05, 0.95)
        airlight = (hazy[:, :, 1][strong] - clear[:, :, 1][strong] * t_med) / (1 - t_med)
        assert 0.65 <= np.median(airlight) <= 1.05
        assert np.abs(hazy - clear).mean() > 0.02  # visibly hazy
        checked += 1
    assert checked >= 2


def test_val_regions_do_not_overlap_train_regions():
    img = np.arange(40 * 100).reshape(40, 100)
    train = demo.split_region(img, "train", 32)
    val = demo.split_region(img, "val", 32)
    assert train.shape[1] + val.shape[1] == 100
    np.testing.assert_array_equal(np.concatenate([train, val], axis=1), img)


def test_rerun_is_a_quick_no_op_and_reproducible(demo_root, tmp_path, capsys):
    stamp = (demo_root / "train" / "hazy").stat().st_mtime_ns
    assert demo.main(["--out", str(demo_root), *TINY]) == 0
    assert "already complete" in capsys.readouterr().out
    assert (demo_root / "train" / "hazy").stat().st_mtime_ns == stamp
    again = tmp_path / "again"
    assert demo.main(["--out", str(again), *TINY]) == 0
    for path in (demo_root / "val" / "hazy").iterdir():
        assert path.read_bytes() == (again / "val" / "hazy" / path.name).read_bytes()
    # a demo build with other settings is rebuilt; a foreign folder is left alone
    assert (
        demo.main(["--out", str(again), "--num-train", "3", "--num-val", "1", "--size", "16"]) == 0
    )
    assert len(list((again / "train" / "clear").iterdir())) == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    assert demo.main(["--out", str(foreign), *TINY]) == 1
    assert (foreign / "mine.txt").read_text() == "keep"
