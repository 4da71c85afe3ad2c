"""SingleImageDataset: roles, recursive folders, crops, LMDB input, errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffsr.data import build_dataset
from diffsr.data.lmdb_convert import folder_to_lmdb

RNG = np.random.default_rng(1)


def write(path: Path, shape=(10, 14, 3)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = RNG.integers(0, 256, shape, dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return img


def options(phase="val", **extra) -> dict:
    return {"name": "single", "type": "SingleImageDataset", "phase": phase, **extra}


def test_lq_role_reads_dataroot_lq_in_natural_order(tmp_path):
    images = {n: write(tmp_path / f"{n}.png") for n in ("im2", "im10", "im1")}
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = build_dataset(options(dataroot_lq=str(tmp_path)))
    assert [Path(dataset[i]["lq_path"]).stem for i in range(3)] == ["im1", "im2", "im10"]
    sample = dataset[1]
    assert set(sample) == {"lq", "lq_path"}
    expected = images["im2"][:, :, ::-1].transpose(2, 0, 1) / 255.0
    torch.testing.assert_close(sample["lq"], torch.from_numpy(expected.copy()).float())


def test_gt_role_with_crop_flips_recursive_and_lmdb(tmp_path):
    write(tmp_path / "birds" / "001.A" / "x.jpg", (20, 18, 3))
    write(tmp_path / "birds" / "002.B" / "y.jpg", (16, 24, 3))
    opt = options(
        "train", role="gt", dataroot_gt=str(tmp_path / "birds"), recursive=True, gt_size=16,
        use_hflip=True, use_rot=True,
    )  # fmt: skip
    dataset = build_dataset(opt, seed=2)
    assert len(dataset) == 2
    sample = dataset[5]
    assert set(sample) == {"gt", "gt_path"} and sample["gt"].shape == (3, 16, 16)
    assert sample["gt_path"].endswith("002.B/y.jpg")

    folder_to_lmdb(tmp_path / "birds", tmp_path / "birds.lmdb", recursive=True, progress=False)
    from_lmdb = build_dataset(
        {**opt, "dataroot_gt": str(tmp_path / "birds.lmdb"), "io_backend": {"type": "lmdb"}},
        seed=2,
    )
    for index in (0, 5, 8):
        assert torch.equal(from_lmdb[index]["gt"], dataset[index]["gt"])


def test_errors_name_the_problem(tmp_path):
    write(tmp_path / "imgs" / "small.png", (6, 6, 3))
    with pytest.raises(ValueError, match="dataroot_gt"):
        build_dataset(options(role="gt", dataroot_lq=str(tmp_path / "imgs")))
    with pytest.raises(ValueError, match="'role' must be one of"):
        build_dataset(options(role="clean", dataroot_lq=str(tmp_path / "imgs")))
    with pytest.raises(ValueError, match=r"small\.png.*pad_if_smaller"):
        build_dataset(options("train", dataroot_lq=str(tmp_path / "imgs"), gt_size=8))[0]
    padded = build_dataset(
        options("train", dataroot_lq=str(tmp_path / "imgs"), gt_size=8, pad_if_smaller=True)
    )[0]
    assert padded["lq"].shape == (3, 8, 8)
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match=r"none.*no images"):
        build_dataset(options(dataroot_lq=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="removed every image"):
        build_dataset(options(dataroot_lq=str(tmp_path / "imgs"), name_filter="big"))
