"""PairedImageDataset: disk/LMDB equivalence, name mapping, subsets, augmentation, errors."""

import logging
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
import torch

from diffsr.data import build_dataset
from diffsr.data.lmdb_convert import paired_folders_to_lmdb

RNG = np.random.default_rng(0)


def write_png(path: Path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return array


def random_image(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def expected_tensor(bgr_uint8: np.ndarray) -> torch.Tensor:
    """Independent conversion: BGR uint8 H x W x 3 -> RGB float C x H x W in [0, 1]."""
    rgb = bgr_uint8[:, :, ::-1].astype(np.float64) / 255.0
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()


def options(lq, gt, phase="val", **extra) -> dict:
    return {
        "name": "t",
        "type": "PairedImageDataset",
        "phase": phase,
        "dataroot_lq": str(lq),
        "dataroot_gt": str(gt),
        **extra,
    }


@pytest.fixture()
def pair_folders(tmp_path):
    """Four pairs with identical names; GT = LQ + 1 so the sides are distinguishable."""
    images = {}
    for i in range(4):
        lq = random_image().clip(0, 254)
        write_png(tmp_path / "lq" / f"img{i}.png", lq)
        write_png(tmp_path / "gt" / f"img{i}.png", lq + 1)
        images[f"img{i}"] = lq
    return tmp_path / "lq", tmp_path / "gt", images


def test_val_returns_whole_images_in_rgb(pair_folders, caplog):
    lq_dir, gt_dir, images = pair_folders
    with caplog.at_level(logging.INFO, logger="diffsr"):
        dataset = build_dataset(options(lq_dir, gt_dir))
    assert "4 LQ/GT pairs" in caplog.text
    assert len(dataset) == 4
    sample = dataset[2]
    assert set(sample) == {"lq", "gt", "lq_path", "gt_path"}
    assert sample["lq_path"] == str(lq_dir / "img2.png")
    assert torch.equal(sample["lq"], expected_tensor(images["img2"]))
    assert torch.equal(sample["gt"], expected_tensor(images["img2"] + 1))


def test_disk_and_lmdb_give_identical_training_samples(pair_folders, tmp_path):
    lq_dir, gt_dir, _ = pair_folders
    paired_folders_to_lmdb(
        lq_dir, gt_dir, tmp_path / "lq.lmdb", tmp_path / "gt.lmdb", progress=False
    )
    aug = {"gt_size": 8, "use_hflip": True, "use_rot": True}
    disk = build_dataset(options(lq_dir, gt_dir, "train", **aug), seed=5)
    lmdb_set = build_dataset(
        options(
            tmp_path / "lq.lmdb", tmp_path / "gt.lmdb", "train", io_backend={"type": "lmdb"}, **aug
        ),
        seed=5,
    )
    assert len(disk) == len(lmdb_set) == 4
    for index in (0, 3, 9, 1234):
        a, b = disk[index], lmdb_set[index]
        assert a["lq"].shape == (3, 8, 8)
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
        assert Path(a["lq_path"]).stem == Path(b["lq_path"]).stem
        torch.testing.assert_close(a["gt"], a["lq"] + 1 / 255)  # same crop and flips


def test_crop_and_flips_keep_pairs_aligned_at_scale_2(tmp_path):
    lq = random_image(10, 12)
    write_png(tmp_path / "lq" / "a.png", lq)
    write_png(tmp_path / "gt" / "a.png", np.kron(lq, np.ones((2, 2, 1), dtype=np.uint8)))
    opt = options(tmp_path / "lq", tmp_path / "gt", "train", scale=2, gt_size=8)
    dataset = build_dataset({**opt, "use_hflip": True, "use_rot": True}, seed=1)
    seen_lq = set()
    for index in range(40):
        sample = dataset[index]
        assert sample["lq"].shape == (3, 4, 4) and sample["gt"].shape == (3, 8, 8)
        upsampled = sample["lq"].repeat_interleave(2, 1).repeat_interleave(2, 2)
        assert torch.equal(upsampled, sample["gt"])
        seen_lq.add(sample["lq"].numpy().tobytes())
    assert len(seen_lq) > 20  # crops and flips really vary


def test_augmentation_depends_only_on_seed_and_index(pair_folders):
    lq_dir, gt_dir, _ = pair_folders
    opt = options(lq_dir, gt_dir, "train", gt_size=8, use_hflip=True, use_rot=True)
    first = build_dataset(opt, seed=3)
    np.random.seed(123)
    a = first[7]
    np.random.seed(999)
    b = build_dataset(opt, seed=3)[7]
    assert torch.equal(a["lq"], b["lq"])
    others = [build_dataset(opt, seed=4)[7]["lq"], first[11]["lq"]]  # 11 % 4 == 7 % 4
    assert not all(torch.equal(a["lq"], o) for o in others)


def test_dense_haze_mapping_and_id_range(tmp_path):
    for i in range(1, 8):
        write_png(tmp_path / "hazy" / f"{i:02d}_hazy.png", random_image())
        write_png(tmp_path / "GT" / f"{i:02d}_GT.png", random_image())
    train = build_dataset(
        options(tmp_path / "hazy", tmp_path / "GT", name_mapping="dense_haze", id_range=[1, 5])
    )
    assert [p.pair_id for p in train.pairs] == ["01", "02", "03", "04", "05"]
    assert train[4]["gt_path"].endswith("05_GT.png")
    assert train[4]["lq_path"].endswith("05_hazy.png")
    val = build_dataset(
        options(tmp_path / "hazy", tmp_path / "GT", name_mapping="dense_haze", name_filter="0[67]")
    )
    assert [Path(val[i]["lq_path"]).name for i in range(2)] == ["06_hazy.png", "07_hazy.png"]


def test_prenet_names_in_one_shared_folder_sorted_naturally(tmp_path):
    for i in (1, 2, 10):
        write_png(tmp_path / "rain" / f"rain-{i}.png", random_image())
        write_png(tmp_path / "rain" / f"norain-{i}.png", random_image())
    folder = tmp_path / "rain"
    dataset = build_dataset(options(folder, folder, name_mapping="prenet"))
    assert [Path(dataset[i]["lq_path"]).name for i in range(3)] == [
        "rain-1.png",
        "rain-2.png",
        "rain-10.png",
    ]
    assert [Path(dataset[i]["gt_path"]).name for i in range(3)] == [
        "norain-1.png",
        "norain-2.png",
        "norain-10.png",
    ]


def test_custom_regex_and_filename_tmpl(tmp_path):
    write_png(tmp_path / "lq" / "cat_x2.png", random_image(6, 8))
    write_png(tmp_path / "gt" / "cat.png", random_image(12, 16))
    both = (tmp_path / "lq", tmp_path / "gt")
    by_tmpl = build_dataset(options(*both, scale=2, filename_tmpl="{}_x2"))
    mapping = {"lq": r"(?P<id>\w+)_x2\.png", "gt": r"(\w+)\.png"}
    by_regex = build_dataset(options(*both, scale=2, name_mapping=mapping))
    for dataset in (by_tmpl, by_regex):
        assert len(dataset) == 1 and dataset[0]["gt"].shape == (3, 12, 16)
    with pytest.raises(ValueError, match="capturing group"):
        build_dataset(options(*both, name_mapping={"lq": r"x\.png", "gt": r"(x)\.png"}))


def test_meta_info_file_selects_and_orders(pair_folders, tmp_path):
    lq_dir, gt_dir, _ = pair_folders
    meta = tmp_path / "meta.txt"
    meta.write_text("img3.png (12,16,3) 1\nimg1\n", encoding="utf-8")
    dataset = build_dataset(options(lq_dir, gt_dir, meta_info_file=str(meta)))
    assert [Path(dataset[i]["lq_path"]).name for i in range(2)] == ["img3.png", "img1.png"]
    meta.write_text("img2.png (12,16,3)\nimg1.png (12,16,3)\n", encoding="utf-8")  # BasicSR's
    dataset = build_dataset(options(lq_dir, gt_dir, meta_info_file=str(meta)))
    assert [Path(dataset[i]["lq_path"]).name for i in range(2)] == ["img2.png", "img1.png"]
    meta.write_text("img1.png\nghost.png\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"meta\.txt.*ghost\.png"):
        build_dataset(options(lq_dir, gt_dir, meta_info_file=str(meta)))


def test_gray_and_16bit_inputs_become_rgb_in_unit_range(tmp_path):
    gray16 = RNG.integers(0, 65536, (6, 6), dtype=np.uint16)
    write_png(tmp_path / "lq" / "a.png", gray16)
    write_png(tmp_path / "gt" / "a.png", np.full((6, 6, 4), 255, np.uint8))  # opaque white RGBA
    paired_folders_to_lmdb(
        tmp_path / "lq", tmp_path / "gt", tmp_path / "l.lmdb", tmp_path / "g.lmdb", progress=False
    )
    expected = torch.from_numpy(gray16.astype(np.float64) / 65535.0).float().expand(3, 6, 6)
    for lq, gt, backend in (
        (tmp_path / "lq", tmp_path / "gt", "disk"),
        (tmp_path / "l.lmdb", tmp_path / "g.lmdb", "lmdb"),
    ):
        sample = build_dataset(options(lq, gt, io_backend={"type": backend}))[0]
        torch.testing.assert_close(sample["lq"], expected, rtol=1e-6, atol=1e-7)
        assert torch.equal(sample["gt"], torch.ones(3, 6, 6))


def test_pad_if_smaller_reflects_else_error_names_files(tmp_path):
    lq = random_image(5, 6)
    write_png(tmp_path / "lq" / "s.png", lq)
    write_png(tmp_path / "gt" / "s.png", lq)
    opt = options(tmp_path / "lq", tmp_path / "gt", "train", gt_size=8)
    with pytest.raises(ValueError, match=r"lq/s\.png.*gt/s\.png.*pad_if_smaller"):
        build_dataset(opt)[0]
    sample = build_dataset({**opt, "pad_if_smaller": True})[0]
    expected = expected_tensor(lq)
    assert sample["lq"].shape == (3, 8, 8)
    assert torch.equal(sample["lq"][:, :5, :6], expected)
    assert torch.equal(sample["lq"][:, 5, :6], expected[:, 3])  # row 5 mirrors row 3
    assert torch.equal(sample["lq"][:, :5, 7], expected[:, :, 3])  # column 7 mirrors column 3


def test_missing_partner_lists_files(tmp_path):
    for name in ("a", "b", "c"):
        write_png(tmp_path / "lq" / f"{name}.png", random_image())
    write_png(tmp_path / "gt" / "a.png", random_image())
    write_png(tmp_path / "gt" / "z.png", random_image())
    with pytest.raises(ValueError, match="no partner") as info:
        build_dataset(options(tmp_path / "lq", tmp_path / "gt"))
    message = str(info.value)
    assert "b.png" in message and "c.png" in message and "z.png" in message


def test_size_mismatch_names_both_files(tmp_path):
    write_png(tmp_path / "lq" / "a.png", random_image(12, 16))
    write_png(tmp_path / "gt" / "a.png", random_image(12, 15))
    dataset = build_dataset(options(tmp_path / "lq", tmp_path / "gt"))
    with pytest.raises(ValueError, match=r"lq/a\.png.*gt/a\.png"):
        dataset[0]


def test_corrupt_image_names_file_on_disk_and_in_lmdb(tmp_path):
    write_png(tmp_path / "lq" / "a.png", random_image())
    write_png(tmp_path / "gt" / "a.png", random_image())
    paired_folders_to_lmdb(
        tmp_path / "lq", tmp_path / "gt", tmp_path / "l.lmdb", tmp_path / "g.lmdb", progress=False
    )
    (tmp_path / "lq" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"lq/a\.png"):
        build_dataset(options(tmp_path / "lq", tmp_path / "gt"))[0]

    with lmdb.open(str(tmp_path / "g.lmdb")) as env, env.begin(write=True) as txn:
        txn.put(b"a", b"garbage")
    lmdb_set = build_dataset(
        options(tmp_path / "l.lmdb", tmp_path / "g.lmdb", io_backend={"type": "lmdb"})
    )
    with pytest.raises(ValueError, match=r"g\.lmdb.*'a'"):
        lmdb_set[0]


def test_empty_missing_and_wrong_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    write_png(tmp_path / "gt" / "a.png", random_image())
    with pytest.raises(ValueError, match=r"empty.*no images"):
        build_dataset(options(tmp_path / "empty", tmp_path / "gt"))
    with pytest.raises(FileNotFoundError, match="missing"):
        build_dataset(options(tmp_path / "missing", tmp_path / "gt"))
    with pytest.raises(ValueError, match="_hazy"):  # nothing matches the pattern
        build_dataset(options(tmp_path / "gt", tmp_path / "gt", name_mapping="dense_haze"))
    with pytest.raises(FileNotFoundError, match=r"gt.*data\.mdb"):
        build_dataset(options(tmp_path / "gt", tmp_path / "gt", io_backend={"type": "lmdb"}))


def test_option_errors_are_explicit(pair_folders):
    lq_dir, gt_dir, _ = pair_folders
    with pytest.raises(ValueError, match=r"'gt_szie'.*Did you mean 'gt_size'"):
        build_dataset(options(lq_dir, gt_dir, gt_szie=8))
    opt = options(lq_dir, gt_dir)
    del opt["phase"]
    with pytest.raises(ValueError, match="phase"):
        build_dataset(opt)
    with pytest.raises(ValueError, match="gt_size 9 must be a multiple of scale 2"):
        build_dataset(options(lq_dir, gt_dir, scale=2, gt_size=9))
    with pytest.raises(ValueError, match="io_backend type 'memcached'"):
        build_dataset(options(lq_dir, gt_dir, io_backend={"type": "memcached"}))
    # loader keys are accepted by the dataset (they are read by build_dataloader)
    build_dataset(options(lq_dir, gt_dir, batch_size_per_gpu=2, num_worker_per_gpu=0))


def test_two_datasets_can_read_one_lmdb_in_one_process(tmp_path):
    """Train and val splits filtered from one LMDB folder: LMDB must be opened once per process."""
    import cv2
    import numpy as np

    from diffsr.data.file_client import LmdbImageFolder
    from diffsr.data.lmdb_util import write_lmdb

    items = []
    for i in range(1, 5):
        path = tmp_path / f"{i:02d}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), 10 * i, np.uint8))
        items.append((f"{i:02d}", path))
    write_lmdb(tmp_path / "set.lmdb", items, progress=False)
    first, second = LmdbImageFolder(tmp_path / "set.lmdb"), LmdbImageFolder(tmp_path / "set.lmdb")
    assert first.read("01").shape == second.read("04").shape == (8, 8, 3)
