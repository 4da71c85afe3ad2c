"""Tiled inference, diffsr/test.py's --tile and unreadable inputs, and scripts/batch_test.py."""

import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

import diffsr.test as test_script
from diffsr.archs.aodnet_arch import AODNet
from diffsr.data.lmdb_util import write_lmdb
from diffsr.models.checkpoint import save_network
from diffsr.utils.tiling import TileOptions, edge_ramp, tile_starts, tiled_forward
from tests.helpers.fixtures import make_paired_folder, write_options

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"

PIXEL_ARCH_SOURCE = '''
import torch
import torch.nn as nn
from diffsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class PerPixelTestNet(nn.Module):
    """Each output pixel depends on its input pixel only (1x1 convolutions)."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 1), nn.ReLU(), nn.Conv2d(width, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.body(x) + x).clamp(0, 1)
'''


def load_batch_test():
    spec = importlib.util.spec_from_file_location(
        "script_batch_test", REPO / "scripts" / "batch_test.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


batch_test = load_batch_test()


def pixel_arch_file() -> Path:
    """Written once per process: a registered name may only be defined once."""
    path = Path(tempfile.gettempdir()) / f"diffsr_tests_{os.getpid()}" / "per_pixel_arch.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PIXEL_ARCH_SOURCE)
    return path


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img[:, :, ::-1].astype(np.float64)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def restore_reference(net: nn.Module, lq_path: Path) -> np.ndarray:
    """Untiled restoration computed here: RGB uint8 values as float64."""
    rgb = cv2.imread(str(lq_path))[:, :, ::-1] / 255.0
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()[None]
    with torch.no_grad():
        out = net.eval()(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)
    return np.round(out * 255.0)


# ----------------------------------------------------------------------------- tiling
@pytest.mark.parametrize(
    ("length", "size", "overlap"), [(50, 16, 5), (64, 16, 0), (17, 16, 15), (16, 16, 4), (9, 16, 4)]
)
def test_tile_starts_cover_the_axis(length, size, overlap):
    starts = tile_starts(length, size, overlap)
    extent = min(size, length)
    covered = np.zeros(length, bool)
    for start in starts:
        assert start >= 0 and start + extent <= length
        covered[start : start + extent] = True
    assert covered.all() and starts[0] == 0 and starts[-1] + extent == length
    steps = np.diff(starts)
    assert all(step == size - overlap for step in steps[:-1])
    assert all(0 < step <= size - overlap for step in steps)


@pytest.mark.parametrize("ramp", ["linear", "cosine"])
def test_neighbour_weights_sum_to_one_in_their_shared_strip(ramp):
    size, shared = 20, 7
    first = edge_ramp(size, 0, shared, ramp, torch.float64).numpy()
    second = edge_ramp(size, shared, 0, ramp, torch.float64).numpy()
    np.testing.assert_allclose(first[-shared:] + second[:shared], 1.0, atol=1e-12)
    assert (first[:-shared] == 1).all() and (second[shared:] == 1).all()
    assert (first > 0).all() and (second > 0).all()
    x = (np.arange(shared) + 0.5) / shared
    expected = x if ramp == "linear" else np.sin(np.pi * x / 2) ** 2
    np.testing.assert_allclose(second[:shared], expected, atol=1e-12)


@pytest.mark.parametrize("ramp", ["linear", "cosine"])
@pytest.mark.parametrize(
    ("height", "width", "size", "overlap"), [(50, 37, 16, 5), (33, 70, 24, 12)]
)
def test_tiled_equals_untiled_exactly_for_a_per_pixel_network(ramp, height, width, size, overlap):
    """1x1 convolutions and correctly rounded element-wise operations: tiles cannot change any
    bit. (Vectorised transcendental kernels such as sigmoid may round the last elements of a
    tensor differently, so they are left out.)"""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU(), nn.Conv2d(5, 3, 1), nn.Hardtanh()).eval()
    x = torch.rand(2, 3, height, width)
    with torch.no_grad():
        whole = net(x)
        tiled = tiled_forward(net, x, TileOptions(size, overlap, ramp))
    assert torch.equal(tiled, whole)


def test_tiled_equals_untiled_for_an_upscaling_per_pixel_network():
    def upscale(x: torch.Tensor) -> torch.Tensor:
        return (x * x - 0.5 * x).repeat_interleave(2, -2).repeat_interleave(2, -1)

    x = torch.rand(1, 3, 30, 41)
    assert torch.equal(tiled_forward(upscale, x, TileOptions(12, 4)), upscale(x))


def test_blending_is_the_documented_weighted_mean():
    """A network that is not translation-equivariant: the result must be sum(w y) / sum(w),
    with the weights of the docs computed here in float64."""
    height, width, size, overlap = 29, 40, 16, 6

    def position_dependent(x: torch.Tensor) -> torch.Tensor:
        return x + x.mean(dim=(2, 3), keepdim=True)  # depends on the whole tile

    x = torch.rand(1, 3, height, width, dtype=torch.float64)
    tiled = tiled_forward(position_dependent, x, TileOptions(size, overlap, "linear")).numpy()

    def weights(starts: list[int], index: int) -> np.ndarray:
        i = np.arange(size) + 0.5
        w = np.ones(size)
        if index > 0:
            w = np.minimum(w, i / (starts[index - 1] + size - starts[index]))
        if index + 1 < len(starts):
            w = np.minimum(w, (size - i) / (starts[index] + size - starts[index + 1]))
        return w

    total = np.zeros((1, 3, height, width))
    weight_sum = np.zeros((height, width))
    rows = [*range(0, height - size, size - overlap), height - size]
    cols = [*range(0, width - size, size - overlap), width - size]
    for a, top in enumerate(rows):
        for b, left in enumerate(cols):
            tile = x[..., top : top + size, left : left + size]
            w = np.outer(weights(rows, a), weights(cols, b))
            total[..., top : top + size, left : left + size] += w * position_dependent(tile).numpy()
            weight_sum[top : top + size, left : left + size] += w
    np.testing.assert_allclose(tiled, total / weight_sum, rtol=1e-12, atol=1e-12)


def test_conv_net_tiles_are_close_with_enough_overlap():
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Conv2d(8, 3, 3, padding=1)).eval()  # receptive radius 3
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        whole = net(x)
        seams = (tiled_forward(net, x, TileOptions(24, 0)) - whole).abs().max().item()
        blended = (tiled_forward(net, x, TileOptions(24, 16, "linear")) - whole).abs().max().item()
        cosine = (tiled_forward(net, x, TileOptions(24, 16, "cosine")) - whole).abs().max().item()
    assert seams > 1e-2  # hard seams without overlap
    assert blended < seams / 4 and cosine < seams / 4


def test_tile_options_reject_bad_values():
    with pytest.raises(ValueError, match="overlap"):
        TileOptions(16, 16)
    with pytest.raises(ValueError, match="tile size"):
        TileOptions(0)
    with pytest.raises(ValueError, match="ramp"):
        TileOptions(16, 4, "gauss")


# ----------------------------------------------------------------------------- diffsr/test.py
def test_test_script_tiles_and_skips_a_corrupt_image(tmp_path, capsys):
    lq, gt = make_paired_folder(tmp_path / "data", 3, size=40)
    (lq / "001.png").write_bytes(b"\x89PNG broken")
    torch.manual_seed(3)
    arch = {"type": "PerPixelTestNet"}
    save_network(tmp_path / "net.pth", {"params": _pixel_net()})
    results = {}
    for label, extra in (("whole", []), ("tiled", ["--tile", "16", "--tile-overlap", "6"])):
        options = {
            "name": label,
            "imports": [str(pixel_arch_file())],
            "device": "cpu",
            "datasets": {"test_1": {"name": "set", "type": "PairedImageDataset",
                                    "dataroot_lq": str(lq), "dataroot_gt": str(gt)}},
            "network_g": arch,
            "path": {"pretrain_network_g": str(tmp_path / "net.pth"),
                     "results_root": str(tmp_path / label)},
            "val": {"metrics": {"psnr": {"type": "calculate_psnr"}}},
        }  # fmt: skip
        code = test_script.main(
            ["-opt", str(write_options(tmp_path / f"{label}.yml", options)), *extra]
        )
        assert code == 1
        assert f"{lq / '001.png'}: cannot decode" in capsys.readouterr().err
        results[label] = tmp_path / label
    for stem in ("000", "002"):
        whole = cv2.imread(str(results["whole"] / "visualization" / "set" / f"{stem}.png"))
        tiled = cv2.imread(str(results["tiled"] / "visualization" / "set" / f"{stem}.png"))
        assert np.array_equal(whole, tiled)
    assert not (results["tiled"] / "visualization" / "set" / "001.png").exists()
    rows = read_csv(results["tiled"] / "set_metrics.csv")
    assert [r[0] for r in rows] == ["image", "000", "002", "mean"]


def _pixel_net() -> nn.Module:
    from diffsr.utils.registry import ARCH_REGISTRY, import_user_modules

    import_user_modules([str(pixel_arch_file())])
    return ARCH_REGISTRY.build({"type": "PerPixelTestNet"})


# ----------------------------------------------------------------------------- batch_test.py
@pytest.fixture()
def two_checkpoints(tmp_path):
    nets = {}
    for seed, name in enumerate(("without", "with")):
        torch.manual_seed(seed)
        nets[name] = AODNet()
        save_network(tmp_path / f"{name}.pth", {"params": nets[name]})
    return nets


def test_batch_test_compares_checkpoints_and_survives_a_corrupt_file(
    tmp_path, two_checkpoints, capsys, caplog
):
    lq, gt = make_paired_folder(tmp_path / "data", 3, size=36)
    (lq / "zzz.png").write_bytes(b"")
    (gt / "zzz.png").write_bytes(b"")
    out = tmp_path / "out"
    code = batch_test.main(
        ["--lq", str(lq), "--gt", str(gt), "--arch", "AODNet", "--out", str(out),
         "--ckpt", f"without={tmp_path / 'without.pth'}", "--ckpt", f"with={tmp_path / 'with.pth'}",
         "--metrics", "psnr", "ssim", "lpips", "--device", "cpu"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert f"{lq / 'zzz.png'}: the image file is empty" in captured.err
    assert "Metric 'lpips' skipped" in caplog.text and "alexnet-owt-7be5be79.pth" in caplog.text
    rows = read_csv(out / "metrics.csv")
    assert rows[0] == ["image", "psnr/without", "psnr/with", "ssim/without", "ssim/with"]
    assert [r[0] for r in rows[1:]] == ["000", "001", "002", "mean"]
    for name, net in two_checkpoints.items():
        column = rows[0].index(f"psnr/{name}")
        per_image = []
        for row in rows[1:-1]:
            saved = read_rgb(out / name / f"{row[0]}.png")
            np.testing.assert_array_equal(saved, restore_reference(net, lq / f"{row[0]}.png"))
            expected = psnr_uint8(saved, read_rgb(gt / f"{row[0]}.png"))
            assert float(row[column]) == pytest.approx(expected, abs=1e-5)
            per_image.append(float(row[column]))
        assert float(rows[-1][column]) == pytest.approx(np.mean(per_image), abs=1e-5)
        own = read_csv(out / name / "lq_metrics.csv")  # diffsr/test.py's format
        assert own[0] == ["image", "psnr", "ssim"]
        assert [r[1] for r in own[1:]] == [r[column] for r in rows[1:]]
    assert "| **mean** |" in (out / "metrics.md").read_text()


def test_batch_test_reads_lmdb_and_single_folders(tmp_path, two_checkpoints):
    lq, gt = make_paired_folder(tmp_path / "data", 2, size=32)
    for side in (lq, gt):
        items = [(p.stem, str(p)) for p in sorted(side.glob("*.png"))]
        write_lmdb(tmp_path / f"{side.name}.lmdb", items, progress=False)
    ckpt = ["--ckpt", f"without={tmp_path / 'without.pth'}", "--arch", "AODNet"]
    assert (
        batch_test.main(["--lq", str(lq), "--gt", str(gt), "--out", str(tmp_path / "a"), *ckpt])
        == 0
    )
    code = batch_test.main(
        ["--lq", str(tmp_path / "lq.lmdb"), "--gt", str(tmp_path / "gt.lmdb"),
         "--out", str(tmp_path / "b"), "--name", "lq", *ckpt]
    )  # fmt: skip
    assert code == 0
    assert read_csv(tmp_path / "a" / "metrics.csv") == read_csv(tmp_path / "b" / "metrics.csv")
    assert batch_test.main(["--lq", str(lq), "--out", str(tmp_path / "c"), *ckpt]) == 0
    assert sorted(p.name for p in (tmp_path / "c" / "without").iterdir()) == ["000.png", "001.png"]
    assert not (tmp_path / "c" / "metrics.csv").exists()


def test_batch_test_builds_the_network_from_a_training_option_file(tmp_path, two_checkpoints):
    lq, gt = make_paired_folder(tmp_path / "data", 2, size=32)
    options = {
        "name": "aod",
        "network_g": {"type": "AODNet"},
        "train": {"optim_g": {"type": "Adam", "lr": 1e-4}, "total_iter": 1},
        "val": {"metrics": {"psnr_y": {"type": "calculate_psnr", "test_y_channel": True}}},
    }
    opt_file = write_options(tmp_path / "train.yml", options)
    code = batch_test.main(
        ["--lq", str(lq), "--gt", str(gt), "--opt", str(opt_file), "--out", str(tmp_path / "o"),
         "--ckpt", str(tmp_path / "with.pth"), "--tile", "20", "--tile-overlap", "8"]
    )  # fmt: skip
    assert code == 0
    rows = read_csv(tmp_path / "o" / "metrics.csv")
    assert rows[0] == ["image", "psnr_y/with"]


def test_batch_test_usage_errors(tmp_path, two_checkpoints, capsys):
    lq, _ = make_paired_folder(tmp_path / "data", 1, size=32)
    base = ["--lq", str(lq), "--out", str(tmp_path / "o")]
    cases = [
        (["--ckpt", str(tmp_path / "nope.pth"), "--arch", "AODNet"], "nope.pth' does not exist"),
        (["--ckpt", str(tmp_path / "with.pth")], "--opt TRAIN_OPTIONS.yml or --arch TYPE"),
        (["--ckpt", str(tmp_path / "with.pth"), "--arch", "AODNett"], "Did you mean 'AODNet'"),
        (["--ckpt", f"a={tmp_path / 'with.pth'}", "--ckpt", f"a={tmp_path / 'without.pth'}",
          "--arch", "AODNet"], "the name 'a' is used twice"),
        (["--ckpt", str(tmp_path / "with.pth"), "--arch", "AODNet", "--tile", "8",
          "--tile-overlap", "8"], "overlap must be"),
    ]  # fmt: skip
    for extra, message in cases:
        assert batch_test.main(base + extra) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("script", ["scripts/batch_test.py", "diffsr/test.py"])
def test_help_works(script):
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    done = subprocess.run(
        [python, str(REPO / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--tile" in done.stdout


def test_tile_block_in_the_options_is_read_and_validated(tmp_path):
    from diffsr.test import UsageError, tile_options_from_opt
    from diffsr.utils.options import OptionError, validate_options

    base = {"name": "t", "is_train": False, "network_g": {"type": "AODNet"}}
    opt = validate_options({**base, "val": {"tile": {"size": 64}}}, "t.yml")
    tile = tile_options_from_opt(opt)
    assert (tile.size, tile.overlap, tile.ramp) == (64, 32, "cosine")
    assert tile_options_from_opt(validate_options(base, "t.yml")) is None
    with pytest.raises(OptionError, match=r"val\.tile\.ramp"):
        validate_options({**base, "val": {"tile": {"size": 64, "ramp": "gauss"}}}, "t.yml")
    with pytest.raises(UsageError, match=r"val\.tile"):
        tile_options_from_opt({"val": {"tile": {"size": 8, "overlap": 8, "ramp": "cosine"}}})
