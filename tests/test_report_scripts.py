"""Report tools: plot_curves, make_table, make_grid, degrade_dataset and visualize helpers."""

import csv
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from statistics import fmean

import cv2
import numpy as np
import pytest

from diffsr.utils import degradations
from diffsr.utils.visualize import comparison_grid, draw_box, stack_rows
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
SCRIPTS = ("plot_curves", "make_table", "make_grid", "degrade_dataset")
RED_BGR = (0, 0, 255)

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib (extra 'plots') missing"
)


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    command = [python, str(REPO / "scripts" / f"{script}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def png_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"{path} is not a readable image"
    return img.shape[1], img.shape[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works(script):
    done = run_script(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Example" in done.stdout


# ----------------------------------------------------------------------------- plot_curves
def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def training_run(psnr_by_iter: dict[int, float], losses: dict[int, float]) -> list[dict]:
    records = []
    for it in sorted(set(psnr_by_iter) | set(losses)):
        if it in losses:
            records.append({"iter": it, "epoch": 0, "lr": 1e-4, "l_total": losses[it]})
        if it in psnr_by_iter:
            records.append({"iter": it, "val_set": "val", "psnr": psnr_by_iter[it], "ssim": 0.5})
    return records


@needs_matplotlib
def test_plot_curves_keeps_the_last_record_after_resume(tmp_path):
    first = training_run({100: 20.0, 200: 21.0, 300: 21.5}, {100: 0.5, 200: 0.4, 300: 0.3})
    # Resumed from iteration 100: 200 and 300 are logged again with new values, then 400.
    resumed = training_run({200: 22.0, 300: 22.5, 400: 23.0}, {200: 0.35, 300: 0.25, 400: 0.2})
    write_jsonl(tmp_path / "a" / "metrics.jsonl", first + resumed)
    write_jsonl(tmp_path / "b" / "metrics.jsonl", training_run({100: 19.0, 200: 19.5}, {}))
    out = tmp_path / "plots" / "psnr.png"
    plot_curves = load_script("plot_curves")
    code = plot_curves.main(
        [str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "psnr", "--labels", "with",
         "without", "--out", str(out), "--size", "640", "360"]
    )  # fmt: skip
    assert code == 0
    assert png_size(out) == (640, 360)
    rows = read_csv(out.with_suffix(".csv"))
    assert rows[0] == ["experiment", "iter", "psnr"]
    expected = [("with", 100, 20.0), ("with", 200, 22.0), ("with", 300, 22.5), ("with", 400, 23.0)]
    expected += [("without", 100, 19.0), ("without", 200, 19.5)]
    assert [(r[0], int(r[1]), float(r[2])) for r in rows[1:]] == expected


@needs_matplotlib
def test_plot_curves_smoothing_is_an_ema_of_the_loss(tmp_path):
    losses = {100: 0.8, 200: 0.4, 300: 0.6, 400: 0.2}
    write_jsonl(tmp_path / "run" / "metrics.jsonl", training_run({}, losses))
    out = tmp_path / "loss.png"
    plot_curves = load_script("plot_curves")
    assert plot_curves.main([str(tmp_path / "run"), "--metric", "l_total", "--smooth", "0.5",
                             "--out", str(out), "--logy"]) == 0  # fmt: skip
    rows = read_csv(out.with_suffix(".csv"))[1:]
    expected, state = [], None
    for value in losses.values():
        state = value if state is None else 0.5 * state + 0.5 * value
        expected.append(state)
    np.testing.assert_allclose([float(r[3]) for r in rows], expected)
    assert png_size(out) == (800, 500)


@needs_matplotlib
def test_plot_curves_reads_text_logs(tmp_path):
    log = tmp_path / "run" / "train_run_20240101_000000.log"
    log.parent.mkdir()
    log.write_text(
        "2024-01-01 00:00:01 INFO: [epoch   0, iter      100/1,000, lr 1.000e-04] "
        "[0.100 s/iter, eta 0:01:30] l_pixel: 5.0000e-02 l_total: 6.0000e-02\n"
        "2024-01-01 00:00:02 INFO: Validation val @ iter 100:\n"
        "  psnr: 20.1234  (best 20.1234 @ iter 100)\n"
        "  ssim: 0.7100  (best 0.7100 @ iter 100)\n"
        "2024-01-01 00:00:03 INFO: Validation val @ iter 1,000:\n"
        "  psnr: 21.5000  (best 21.5000 @ iter 1000)\n"
    )
    out = tmp_path / "curve.png"
    plot_curves = load_script("plot_curves")
    assert plot_curves.main([str(tmp_path / "run"), "--metric", "psnr", "--out", str(out)]) == 0
    rows = read_csv(out.with_suffix(".csv"))[1:]
    assert [(int(r[1]), float(r[2])) for r in rows] == [(100, 20.1234), (1000, 21.5)]
    assert plot_curves.main([str(log), "--metric", "l_pixel", "--out", str(out)]) == 0
    assert [(int(r[1]), float(r[2])) for r in read_csv(out.with_suffix(".csv"))[1:]] == [
        (100, 0.05)
    ]


@needs_matplotlib
def test_plot_curves_reads_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    for run, points in enumerate(({100: 20.0, 200: 21.0}, {200: 22.0})):  # second: a resume
        writer = SummaryWriter(str(tmp_path / "run" / "tb_logger"), filename_suffix=f".{run}")
        for it, value in points.items():
            writer.add_scalar("metrics/val/psnr", value, it)
        writer.close()
    out = tmp_path / "tb.png"
    assert load_script("plot_curves").main([str(tmp_path / "run"), "--out", str(out)]) == 0
    rows = read_csv(out.with_suffix(".csv"))[1:]
    assert [(int(r[1]), float(r[2])) for r in rows] == [(100, 20.0), (200, 22.0)]


def test_plot_curves_reports_bad_requests(tmp_path, capsys, monkeypatch):
    records = training_run({100: 20.0}, {100: 0.5})
    records.append({"iter": 100, "val_set": "val2", "psnr": 18.0})
    write_jsonl(tmp_path / "run" / "metrics.jsonl", records)
    plot_curves = load_script("plot_curves")
    assert plot_curves.main([str(tmp_path / "run"), "--metric", "lpips"]) == 2
    assert "no 'lpips' logged; available: l_total, lr, psnr, ssim" in capsys.readouterr().err
    assert plot_curves.main([str(tmp_path / "run"), "--metric", "psnr"]) == 2
    assert (
        "several validation sets (val, val2); choose one with --val-set" in capsys.readouterr().err
    )
    (tmp_path / "tb" / "tb_logger").mkdir(parents=True)
    (tmp_path / "tb" / "tb_logger" / "events.out.tfevents.1.host").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    assert plot_curves.main([str(tmp_path / "tb")]) == 2
    assert "tensorboard is not installed" in capsys.readouterr().err


# ----------------------------------------------------------------------------- make_table
def write_results(folder: Path, set_name: str, values: dict[str, list[float]]) -> dict[str, float]:
    """A diffsr test metrics CSV; returns the means (computed here, independently)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(values)
    count = len(values[names[0]])
    means = {n: fmean(values[n]) for n in names}
    lines = ["image," + ",".join(names)]
    lines += [f"img{i:02d}," + ",".join(f"{values[n][i]:.6f}" for n in names) for i in range(count)]
    lines.append("mean," + ",".join(f"{means[n]:.6f}" for n in names))
    (folder / f"{set_name}_metrics.csv").write_text("\n".join(lines) + "\n")
    return {n: float(f"{means[n]:.6f}") for n in names}


def test_make_table_deltas(tmp_path):
    rng = np.random.default_rng(0)
    runs = {}
    for run in ("a_wo", "a_w", "b_wo", "b_w"):
        values = {"psnr": list(rng.uniform(14, 16, 5)), "ssim": list(rng.uniform(0.4, 0.5, 5)),
                  "lpips": list(rng.uniform(0.4, 0.5, 5))}  # fmt: skip
        runs[run] = write_results(tmp_path / run, "DenseHaze_test", values)
    out = tmp_path / "tables" / "table1"
    make_table = load_script("make_table")
    code = make_table.main(
        ["--set", "DenseHaze_test", "--metrics", "psnr", "ssim", "--out", str(out),
         "--pair", "FSDGN", str(tmp_path / "a_wo"), str(tmp_path / "a_w"),
         "--pair", "IAT", str(tmp_path / "b_wo"), str(tmp_path / "b_w")]
    )  # fmt: skip
    assert code == 0
    rows = read_csv(out.with_suffix(".csv"))
    assert rows[0] == ["network", "metric", "without", "with", "delta"]
    got = {(r[0], r[1]): (float(r[2]), float(r[3]), float(r[4])) for r in rows[1:]}
    assert set(got) == {(n, m) for n in ("FSDGN", "IAT") for m in ("psnr", "ssim")}
    for network, prefix in (("FSDGN", "a"), ("IAT", "b")):
        for metric in ("psnr", "ssim"):
            without, with_ = runs[f"{prefix}_wo"][metric], runs[f"{prefix}_w"][metric]
            np.testing.assert_allclose(
                got[(network, metric)], (without, with_, with_ - without), atol=2e-6
            )
    markdown = out.with_suffix(".md").read_text()
    a_wo, a_w = runs["a_wo"], runs["a_w"]
    expected_row = (
        f"| FSDGN | {a_wo['psnr']:.2f} / {a_wo['ssim']:.4f} | {a_w['psnr']:.2f} / {a_w['ssim']:.4f} "
        f"| {a_w['psnr'] - a_wo['psnr']:+.2f} / {a_w['ssim'] - a_wo['ssim']:+.4f} |"
    )
    assert expected_row in markdown.splitlines()


def test_make_table_errors_name_the_file(tmp_path, capsys):
    write_results(tmp_path / "x", "test", {"psnr": [20.0, 21.0]})
    make_table = load_script("make_table")
    assert make_table.main(["--pair", "N", str(tmp_path / "x"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "test_metrics.csv: no column ssim; it has: psnr" in err
    assert (
        make_table.main(["--set", "val", "--pair", "N", str(tmp_path / "x"), str(tmp_path / "x")])
        == 2
    )
    assert "val_metrics.csv: not found; the sets here: test" in capsys.readouterr().err
    assert make_table.main(["--sweep", "0:" + str(tmp_path / "x"), "--metrics", "psnr"]) == 2
    assert "give the gamma = 0 run (no DiffLoss) with --baseline" in capsys.readouterr().err


@needs_matplotlib
def test_make_table_gamma_sweep(tmp_path):
    means = {}
    for gamma in (0.005, 0.0005, 0.001):
        means[gamma] = write_results(
            tmp_path / f"g{gamma}", "t", {"psnr": [14 + 100 * gamma, 15.0]}
        )
    baseline = write_results(tmp_path / "base", "t", {"psnr": [14.0, 14.5]})
    out = tmp_path / "sweep"
    make_table = load_script("make_table")
    sweep = [f"{g}:{tmp_path / f'g{g}'}" for g in means]
    code = make_table.main(["--sweep", *sweep, "--baseline", str(tmp_path / "base"),
                            "--metrics", "psnr", "--out", str(out), "--size", "300", "200"])  # fmt: skip
    assert code == 0
    assert png_size(out.with_suffix(".png")) == (300, 200)
    rows = read_csv(out.with_suffix(".csv"))
    assert rows[0] == ["gamma", "psnr", "results"]
    got = [(float(r[0]), float(r[1])) for r in rows[1:]]
    expected = [(0.0, baseline["psnr"])] + [(g, means[g]["psnr"]) for g in sorted(means)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


# ----------------------------------------------------------------------------- grids
def grey_noise(seed: int, height: int = 30, width: int = 40) -> np.ndarray:
    """uint8 BGR images whose pixels are never pure red (green channel >= 40)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    return img


def test_comparison_grid_layout_box_and_zoom():
    images = [grey_noise(i) for i in range(3)]
    box, zoom, gap, label_h, t = (5, 6, 10, 8), 2, 4, 20, 2
    grid = comparison_grid(
        images, ["a", "b", "c"], box, zoom, gap=gap, label_height=label_h, thickness=t
    )
    assert grid.shape == (label_h + 30 + gap + 8 * zoom, 3 * 40 + 2 * gap, 3)
    for column, img in enumerate(images):
        left, top = column * (40 + gap), label_h
        panel = grid[top : top + 30, left : left + 40]
        x, y, w, h = box
        # Outline: the outer t rows/columns of the box are red; inside and outside untouched.
        for edge in (
            panel[y, x : x + w],
            panel[y + h - 1, x : x + w],
            panel[y : y + h, x],
            panel[y : y + h, x + w - 1],
        ):
            assert (edge == RED_BGR).all()
        np.testing.assert_array_equal(
            panel[y + t : y + h - t, x + t : x + w - t], img[y + t : y + h - t, x + t : x + w - t]
        )
        np.testing.assert_array_equal(panel[:y], img[:y])
        # Zoom: nearest-neighbour enlargement, centred under the image, framed in red.
        zoom_left = left + (40 - w * zoom) // 2
        enlarged = grid[top + 30 + gap :, zoom_left : zoom_left + w * zoom]
        expected = np.repeat(np.repeat(img[y : y + h, x : x + w], zoom, 0), zoom, 1)
        np.testing.assert_array_equal(enlarged[t:-t, t:-t], expected[t:-t, t:-t])
        assert (enlarged[0] == RED_BGR).all() and (enlarged[:, -1] == RED_BGR).all()
    # Label strips hold dark text on white.
    assert grid[:label_h].min() < 128 and grid[0, 0].tolist() == [255, 255, 255]


def test_comparison_grid_without_box_or_labels_and_bad_inputs():
    images = [grey_noise(0), grey_noise(1)]
    grid = comparison_grid(images, gap=3)
    assert grid.shape == (30, 83, 3)
    np.testing.assert_array_equal(grid[:, 43:], images[1])
    with pytest.raises(ValueError, match="does not lie inside the 40 x 30 image"):
        comparison_grid(images, box=(35, 0, 10, 10))
    with pytest.raises(ValueError, match="same size"):
        comparison_grid([grey_noise(0), grey_noise(1, 20, 40)])


def test_comparison_grid_display_width_keeps_full_resolution_zoom():
    img = grey_noise(3, 60, 80)
    grid = comparison_grid(
        [img], box=(10, 10, 20, 10), zoom=1, display_width=40, gap=0, thickness=1
    )
    assert grid.shape == (30 + 10, 40, 3)  # 80 x 60 shown at 40 x 30; zoom 20 x 10 at full size
    np.testing.assert_array_equal(grid[31:39, 11:29], img[11:19, 11:29])
    # The full image is shown at half size: 2 x 2 block means (outside the drawn box).
    block_means = img.astype(float).reshape(30, 2, 40, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(grid[:5, :, :], block_means[:5], atol=1)


def test_stack_rows_centres_narrow_rows():
    wide, narrow = np.zeros((5, 10, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)
    stacked = stack_rows([wide, narrow], gap=2)
    assert stacked.shape == (11, 10, 3)
    assert (stacked[7:, 2:8] == 0).all() and (stacked[7:, :2] == 255).all()


def test_draw_box_clips_thickness_to_small_boxes():
    out = draw_box(np.zeros((8, 8, 3), np.uint8), (2, 2, 1, 3), (1, 2, 3), thickness=4)
    assert (out[2:5, 2] == (1, 2, 3)).all() and out.sum() == 3 * (1 + 2 + 3)


def test_make_grid_script(tmp_path):
    folders = {}
    for index, label in enumerate(("in", "wo", "w", "gt")):
        folders[label] = tmp_path / label
        folders[label].mkdir()
        for name in ("51", "52"):
            suffix = "_hazy" if label in ("in", "wo", "w") else "_GT"
            cv2.imwrite(
                str(folders[label] / f"{name}{suffix}.png"), grey_noise(index * 10 + int(name))
            )
    out = tmp_path / "grid.png"
    make_grid = load_script("make_grid")
    args = []
    for label, folder in folders.items():
        args += ["--column", label, str(folder)]
    args += ["--image", "51", "--image", "52", "--box", "5,6,10,8", "--box", "20,10,8,8"]
    args += ["--zoom", "2", "--label-height", "20", "--out", str(out)]
    assert make_grid.main(args) == 0
    grid = cv2.imread(str(out))
    row1_h, row2_h = 20 + 30 + 4 + 16, 30 + 4 + 16
    assert grid.shape == (row1_h + 4 + row2_h, 4 * 40 + 3 * 4, 3)
    assert (grid[20 + 6, 5:15] == RED_BGR).all()  # row 1, first column, top edge of its box
    assert (grid[row1_h + 4 + 10, 20:28] == RED_BGR).all()  # row 2's own box
    assert (grid[row1_h + 4 + 10, 40 + 4 + 20 : 40 + 4 + 28] == RED_BGR).all()  # column 2


def test_make_grid_reports_ambiguous_names(tmp_path, capsys):
    for name in ("1_a.png", "1_b.png"):
        cv2.imwrite(str(tmp_path / name), grey_noise(0))
    make_grid = load_script("make_grid")
    assert make_grid.main(["--column", "x", str(tmp_path), "--image", "1"]) == 2
    assert "2 images match '1' (found: 1_a.png, 1_b.png)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- degrade_dataset
def make_cub_tree(root: Path) -> None:
    for relative, seed in (("images/001.Albatross/a_1.png", 1), ("images/002.Auklet/b_2.png", 2)):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / relative), grey_noise(seed, 16, 20))
    cv2.imwrite(str(root / "images/002.Auklet/c_3.jpg"), grey_noise(3, 16, 20))
    for name in ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt"):
        (root / name).write_text(f"1 {name}\n")
    (root / ".hidden").write_text("skip me")


def test_degrade_dataset_cub_layout_reproducible(tmp_path, capsys):
    make_cub_tree(tmp_path / "cub")
    script = load_script("degrade_dataset")
    out = tmp_path / "fog"
    assert script.main([str(tmp_path / "cub"), "--kind", "fog", "--severity", "2", "--seed", "7",
                        "--out", str(out)]) == 0  # fmt: skip
    assert "CUB-200-2011 layout" in capsys.readouterr().out
    assert (out / "images.txt").read_text() == "1 images.txt\n"
    assert not (out / ".hidden").exists()
    assert json.loads((out / "degradation.json").read_text())["kind"] == "fog"

    # One image against a direct computation with its documented seed (seed, SHA-256 of path).
    relative = "images/001.Albatross/a_1.png"
    digest = int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "little")
    clean = grey_noise(1, 16, 20).astype(np.float32) / 255
    expected = degradations.add_fog(clean, np.random.default_rng([7, digest]), 2)
    np.testing.assert_array_equal(
        cv2.imread(str(out / relative)), (expected * 255).round().astype(np.uint8)
    )
    assert cv2.imread(str(out / "images/002.Auklet/c_3.jpg")).shape == (16, 20, 3)

    # Two worker processes (a real run of the script), another folder: byte-identical images.
    again = tmp_path / "fog_again"
    done = run_script("degrade_dataset", str(tmp_path / "cub"), "--kind", "fog", "--severity",
                      "2", "--seed", "7", "--out", str(again), "--workers", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert (again / path.relative_to(out)).read_bytes() == path.read_bytes()

    # Resume keeps finished images; other settings in the same folder are refused.
    capsys.readouterr()
    assert script.main([str(tmp_path / "cub"), "--kind", "fog", "--severity", "2", "--seed", "7",
                        "--out", str(out)]) == 0  # fmt: skip
    assert "0 images degraded, 3 kept" in capsys.readouterr().out
    assert script.main([str(tmp_path / "cub"), "--kind", "rain", "--out", str(out)]) == 2
    assert "already holds a different degradation" in capsys.readouterr().err


def test_degrade_dataset_png_format_and_bad_source(tmp_path, capsys):
    make_cub_tree(tmp_path / "cub")
    script = load_script("degrade_dataset")
    out = tmp_path / "dark"
    assert script.main([str(tmp_path / "cub"), "--kind", "lowlight", "--format", "png",
                        "--no-copy-other", "--out", str(out)]) == 0  # fmt: skip
    assert (out / "images/002.Auklet/c_3.png").is_file() and not (out / "images.txt").exists()
    assert script.main([str(tmp_path / "missing"), "--kind", "haze", "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert (
        script.main([str(tmp_path / "cub"), "--kind", "haze", "--out", str(tmp_path / "cub" / "x")])
        == 2
    )
    assert "lies inside the source folder" in capsys.readouterr().err
