"""scripts/create_lmdb.py and the LMDB format: meta_info lines, dotted names, BasicSR compatibility.

The BasicSR side is re-implemented here from its documented format (keys without extension,
PNG values, meta_info lines ``name.png (h,w,c) level``), independently of diffsr's code.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
import torch

import diffsr.data.lmdb_util as lmdb_util
from diffsr.data import build_dataset
from diffsr.data.lmdb_util import write_lmdb

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "create_lmdb.py"
RNG = np.random.default_rng(0)


def load_script():
    spec = importlib.util.spec_from_file_location("create_lmdb_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


create_lmdb = load_script()


def write_images(folder: Path, names, shape=(6, 5, 3)) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in names:
        images[name] = RNG.integers(0, 256, shape, dtype=np.uint8)
        assert cv2.imwrite(str(folder / name), images[name])
    return images


def basicsr_style_write(folder: Path, out: Path) -> None:
    """Minimal writer following BasicSR's format (make_lmdb_from_imgs)."""
    env = lmdb.open(str(out), map_size=1 << 26)
    lines = []
    with env.begin(write=True) as txn:
        for path in sorted(folder.glob("*.png")):
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            key = path.name[: -len(".png")]
            _, buffer = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            txn.put(key.encode("ascii"), buffer.tobytes())
            h, w = img.shape[:2]
            c = img.shape[2] if img.ndim == 3 else 1
            lines.append(f"{key}.png ({h},{w},{c}) 1\n")
    env.close()
    (out / "meta_info.txt").write_text("".join(lines))


def basicsr_style_read(lmdb_path: Path) -> dict[str, np.ndarray]:
    """Minimal reader as BasicSR does it (keys = meta line up to the first dot)."""
    keys = [line.split(".")[0] for line in (lmdb_path / "meta_info.txt").read_text().splitlines()]
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        images = {
            key: cv2.imdecode(np.frombuffer(txn.get(key.encode("ascii")), np.uint8), -1)
            for key in keys
        }
    env.close()
    return images


def test_folder_lmdb_readable_by_basicsr_style_reader(tmp_path):
    images = write_images(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    gray = RNG.integers(0, 65536, (4, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "imgs" / "d.png"), gray)
    assert (
        create_lmdb.main(
            ["--input", str(tmp_path / "imgs"), "--out", str(tmp_path / "x.lmdb"), "--quiet"]
        )
        == 0
    )
    read = basicsr_style_read(tmp_path / "x.lmdb")
    assert sorted(read) == ["a", "b", "c", "d"]
    for name, img in images.items():
        np.testing.assert_array_equal(read[name[:-4]], img)
    np.testing.assert_array_equal(read["d"], gray)  # 16-bit gray kept as stored
    lines = (tmp_path / "x.lmdb" / "meta_info.txt").read_text().splitlines()
    assert lines == ["a.png (6,5,3) 1", "b.png (6,5,3) 1", "c.png (6,5,3) 1", "d.png (4,3,1) 1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "x.lmdb"]  # no temp left


def test_basicsr_style_lmdb_loads_in_diffsr(tmp_path):
    lq = write_images(tmp_path / "lq", ["p1.png", "p2.png"])
    gt = write_images(tmp_path / "gt", ["p1.png", "p2.png"])
    basicsr_style_write(tmp_path / "lq", tmp_path / "lq.lmdb")
    basicsr_style_write(tmp_path / "gt", tmp_path / "gt.lmdb")
    dataset = build_dataset(
        {
            "type": "PairedImageDataset",
            "phase": "test",
            "dataroot_lq": str(tmp_path / "lq.lmdb"),
            "dataroot_gt": str(tmp_path / "gt.lmdb"),
            "io_backend": {"type": "lmdb"},
        }
    )
    assert len(dataset) == 2
    for index, name in enumerate(["p1.png", "p2.png"]):
        sample = dataset[index]
        for side, images in (("lq", lq), ("gt", gt)):
            rgb = images[name][:, :, ::-1].transpose(2, 0, 1) / 255.0
            torch.testing.assert_close(sample[side], torch.from_numpy(rgb.copy()).float())


def test_dotted_and_spaced_names_keep_unique_keys(tmp_path):
    names = ["img.v2.png", "img.v3.png", "my photo.jpg"]
    write_images(tmp_path / "imgs", names)
    out = tmp_path / "dots.lmdb"
    assert create_lmdb.main(["--input", str(tmp_path / "imgs"), "--out", str(out), "--quiet"]) == 0
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert lines == [
        "img.v2.png (6,5,3) 1",
        "img.v3.png (6,5,3) 1",
        "my photo.png (6,5,3) 1",
    ]
    env = lmdb.open(str(out), readonly=True, lock=False)
    with env.begin() as txn:
        keys = sorted(key.decode() for key, _ in txn.cursor())
    env.close()
    assert keys == ["img.v2", "img.v3", "my photo"]
    dataset = build_dataset(
        {
            "type": "SingleImageDataset",
            "phase": "val",
            "dataroot_lq": str(out),
            "io_backend": {"type": "lmdb"},
        }
    )
    assert [Path(dataset[i]["lq_path"]).stem for i in range(3)] == keys


def test_paired_dense_haze_lmdb_keys_are_pair_ids(tmp_path):
    for i in range(1, 5):
        write_images(tmp_path / "hazy", [f"{i:02d}_hazy.png"])
        write_images(tmp_path / "GT", [f"{i:02d}_GT.png"])
    args = [
        "--lq", str(tmp_path / "hazy"), "--gt", str(tmp_path / "GT"),
        "--out-lq", str(tmp_path / "h.lmdb"), "--out-gt", str(tmp_path / "g.lmdb"),
        "--name-mapping", "dense_haze", "--quiet",
    ]  # fmt: skip
    assert create_lmdb.main([*args, "--id-range", "2", "3"]) == 0
    for db in ("h.lmdb", "g.lmdb"):
        assert (tmp_path / db / "meta_info.txt").read_text().split("\n")[:2] == [
            "02.png (6,5,3) 1",
            "03.png (6,5,3) 1",
        ]
    hazy = cv2.imread(str(tmp_path / "hazy" / "03_hazy.png"))
    np.testing.assert_array_equal(basicsr_style_read(tmp_path / "h.lmdb")["03"], hazy)
    # refuses to overwrite, then replaces with --overwrite
    assert create_lmdb.main(args) == 1
    assert create_lmdb.main([*args, "--overwrite"]) == 0
    assert len((tmp_path / "g.lmdb" / "meta_info.txt").read_text().splitlines()) == 4


def test_duplicate_keys_and_bad_files_are_named(tmp_path):
    write_images(tmp_path / "dup", ["a.png", "a.jpg"])
    with pytest.raises(ValueError, match=r"a\.jpg.*a\.png|a\.png.*a\.jpg"):
        lmdb_util.write_lmdb(
            tmp_path / "x.lmdb",
            [("a", tmp_path / "dup" / "a.png"), ("a", tmp_path / "dup" / "a.jpg")],
            progress=False,
        )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"broken\.png"):
        write_lmdb(
            tmp_path / "y.lmdb", [("broken", tmp_path / "bad" / "broken.png")], progress=False
        )
    assert not (tmp_path / "y.lmdb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_map_size_grows_when_estimate_is_too_small(tmp_path, monkeypatch):
    images = write_images(tmp_path / "imgs", [f"{i}.png" for i in range(6)], shape=(64, 64, 3))
    monkeypatch.setattr(lmdb_util, "_map_size", lambda mean_bytes, count: 32 * 1024)
    items = [(name[:-4], tmp_path / "imgs" / name) for name in images]
    write_lmdb(tmp_path / "grow.lmdb", items, chunk_size=2, progress=False)
    read = basicsr_style_read(tmp_path / "grow.lmdb")
    for name, img in images.items():
        np.testing.assert_array_equal(read[name[:-4]], img)


def test_meta_line_parsing_from_the_right():
    entry = lmdb_util.parse_meta_line("a (1,2,3) b.png (10,20,3) 1")
    assert (entry.name, entry.shape, entry.compress_level, entry.key) == (
        "a (1,2,3) b.png",
        (10, 20, 3),
        1,
        "a (1,2,3) b",
    )
    with pytest.raises(ValueError, match=re.escape("meta_info.txt:7")):
        lmdb_util.parse_meta_line("no shape here", "meta_info.txt:7")


def test_cli_help_and_argument_errors():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    assert "--out-lq" in done.stdout and "--compress-level" in done.stdout
    with pytest.raises(SystemExit):
        create_lmdb.parse_args(["--input", "x"])  # --out missing
