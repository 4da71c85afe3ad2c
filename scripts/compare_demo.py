"""Side-by-side comparison of training runs: final validation metrics, time per iteration,
and an image grid (input / run 1 / run 2 / ... / ground truth) from the saved validation images.

    python scripts/compare_demo.py --run "L2 only=experiments/demo_dehaze_l2" \\
        --run "L2 + DiffLoss=experiments/demo_dehaze_diffloss" \\
        --lq datasets/demo_haze/val/hazy --gt datasets/demo_haze/val/clear --out experiments/demo_comparison

Each run folder must hold the ``metrics.jsonl`` written by diffsr/train.py and, for the grid,
validation images saved with ``val.save_img: true``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2

from diffsr.utils.file_util import atomic_write_text
from diffsr.utils.img_util import imread, imwrite
from diffsr.utils.visualize import comparison_grid, stack_rows, to_uint8_image


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train the run first (diffsr/train.py).")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Last validation metrics, their iteration, and the median logged seconds per iteration."""
    by_iter: dict[int, dict[str, Any]] = {}
    for record in records:
        if "val_set" in record:
            by_iter[record["iter"]] = record  # a resumed run repeats iterations: last wins
    if not by_iter:
        raise ValueError("no validation records in metrics.jsonl")
    last = by_iter[max(by_iter)]
    times = sorted(r["sec_per_iter"] for r in records if "sec_per_iter" in r)
    metrics = {k: v for k, v in last.items() if k not in ("iter", "val_set")}
    return {
        "iter": last["iter"],
        "metrics": metrics,
        "sec_per_iter": times[len(times) // 2] if times else float("nan"),
    }


def read_environment(run_dir: Path) -> dict[str, Any] | None:
    """The ``environment.json`` diffsr/train.py wrote for the run (threads, versions, CPU)."""
    path = run_dir / "environment.json"
    return json.loads(path.read_text()) if path.is_file() else None


def environment_line(environments: list[dict[str, Any] | None]) -> str:
    """One Markdown line saying what the numbers depend on; flags runs that differ."""
    known = [e for e in environments if e is not None]
    if not known:
        return "Environment: not recorded (runs trained before environment.json existed).\n"
    keys = ("torch_threads", "cpu_capability", "cpu_model")
    first = known[0]
    packages = ", ".join(f"{k} {v}" for k, v in first["packages"].items())
    line = (
        f"Environment: {first['torch_threads']} torch thread(s) per run, "
        f"{first['cpu_model']} ({first['cpu_capability']}), {packages}."
    )
    differ = [k for k in keys if len({str(e.get(k)) for e in known}) > 1]
    if differ or len({json.dumps(e["packages"], sort_keys=True) for e in known}) > 1:
        line += f" The runs differ in {', '.join(differ) or 'package versions'}: not comparable."
    return line + "\n"


def markdown_table(names: list[str], summaries: list[dict[str, Any]]) -> str:
    metric_names = list(summaries[0]["metrics"])
    header = "| run | " + " | ".join(metric_names) + " | s/iter | iterations |"
    lines = [header, "|---" * (len(metric_names) + 3) + "|"]
    for name, summary in zip(names, summaries):
        cells = [f"{summary['metrics'][m]:.4f}" for m in metric_names]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {summary['sec_per_iter']:.3f} | {summary['iter']} |"
        )
    return "\n".join(lines) + "\n"


def latest_restored(run_dir: Path, stem: str) -> Path | None:
    folder = run_dir / "visualization" / stem
    candidates = sorted(folder.glob(f"{stem}_*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    return candidates[-1] if candidates else None


def build_grid(names: list[str], run_dirs: list[Path], lq_dir: Path, gt_dir: Path, count: int):
    rows = []
    for lq_path in sorted(lq_dir.glob("*.png"))[:count]:
        restored = [latest_restored(run, lq_path.stem) for run in run_dirs]
        if any(r is None for r in restored):
            continue
        images = [to_uint8_image(imread(lq_path))]
        images += [cv2.imread(str(p)) for p in restored]
        images.append(to_uint8_image(imread(gt_dir / lq_path.name)))
        height, width = images[0].shape[:2]
        box = (width // 4, height // 4, width // 4, height // 4)
        rows.append(comparison_grid(images, ["input", *names, "ground truth"], box=box, zoom=2.0))
    return stack_rows(rows) if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a label and an experiment folder",
    )
    parser.add_argument("--lq", type=Path, help="validation inputs (for the grid)")
    parser.add_argument("--gt", type=Path, help="validation ground truths (for the grid)")
    parser.add_argument("--grid-images", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="folder for comparison.md/json/png")
    args = parser.parse_args(argv)
    names, run_dirs = [], []
    for item in args.run:
        if "=" not in item:
            parser.error(f"--run {item!r}: expected NAME=DIR")
        name, folder = item.split("=", 1)
        names.append(name)
        run_dirs.append(Path(folder))
    summaries = [summarise(read_records(run)) for run in run_dirs]
    environments = [read_environment(run) for run in run_dirs]
    for summary, environment in zip(summaries, environments):
        summary["environment"] = environment
    table = markdown_table(names, summaries) + "\n" + environment_line(environments)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "comparison.md", table)
    atomic_write_text(
        args.out / "comparison.json", json.dumps(dict(zip(names, summaries)), indent=2)
    )
    print(table)
    if args.lq and args.gt:
        grid = build_grid(names, run_dirs, args.lq, args.gt, args.grid_images)
        if grid is None:
            print(
                "No saved validation images found (set val.save_img: true); grid skipped.",
                file=sys.stderr,
            )
        else:
            imwrite(grid, args.out / "comparison_grid.png")
            print(f"Image grid: {args.out / 'comparison_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
