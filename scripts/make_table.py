"""Collect test results into the paper's tables and the gamma-sweep plot.

Examples:
    # Table 1 layout: network | without | with | delta (Markdown + CSV)
    python scripts/make_table.py --set DenseHaze_test --metrics psnr ssim --out table \\
        --pair FSDGN results/fsdgn_l1 results/fsdgn_diffloss \\
        --pair MB-TaylorFormer results/taylorformer_l1 results/taylorformer_diffloss
    # Fig. 7: a metric against the DiffLoss weight gamma (log axis), plus a CSV
    python scripts/make_table.py --set DenseHaze_test --metrics psnr ssim --out gamma_sweep \\
        --sweep 0.0005:results/g5e-4 0.001:results/g1e-3 0.005:results/g5e-3 \\
        --baseline results/fsdgn_l1

A results folder is what ``diffsr/test.py`` writes (``results/<name>/``); the table reads the
``mean`` row of its ``<set>_metrics.csv`` (header ``image,<metric>,...``). A folder with a single
``*_metrics.csv`` needs no --set, and a CSV file may be given instead of a folder.
Delta = with - without.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from diffsr.utils.visualize import LineSeries, PlotPanel, save_line_plot

DECIMALS = {"psnr": 2, "fid": 2}  # every other metric: 4


class TableError(Exception):
    """A problem with the inputs, reported as one line."""


@dataclass
class Results:
    """The mean metrics of one test run, and the images they were computed on."""

    path: Path
    means: dict[str, float]
    images: list[str]


# ----------------------------------------------------------------------------- reading
def find_metrics_csv(location: Path, set_name: str | None) -> Path:
    """The ``<set>_metrics.csv`` of a results folder (or ``location`` itself if a file)."""
    if location.is_file():
        return location
    if not location.is_dir():
        raise TableError(f"{location}: no such results folder or CSV file.")
    if set_name is not None:
        path = location / f"{set_name}_metrics.csv"
        if not path.is_file():
            raise TableError(f"{path}: not found; the sets here: {_sets_in(location)}.")
        return path
    candidates = sorted(location.glob("*_metrics.csv"))
    if len(candidates) != 1:
        raise TableError(
            f"{location}: {len(candidates)} *_metrics.csv files ({_sets_in(location)}); "
            f"choose the test set with --set."
        )
    return candidates[0]


def read_results(path: Path, metrics: list[str]) -> Results:
    """The ``mean`` row of a metrics CSV for the requested metrics."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "image" not in header:
            raise TableError(f"{path}: no 'image' column; is this a diffsr test metrics CSV?")
        missing = [m for m in metrics if m not in header]
        if missing:
            available = ", ".join(h for h in header if h != "image")
            raise TableError(f"{path}: no column {', '.join(missing)}; it has: {available}.")
        rows = list(reader)
    mean_rows = [row for row in rows if row["image"] == "mean"]
    if not mean_rows:
        raise TableError(f"{path}: no 'mean' row; was the test run interrupted?")
    try:
        means = {m: float(mean_rows[-1][m]) for m in metrics}
    except ValueError as err:
        raise TableError(f"{path}: the mean row holds a non-number ({err}).") from None
    return Results(path, means, [row["image"] for row in rows if row["image"] != "mean"])


def with_extension(stem: Path, extension: str) -> Path:
    """``stem`` plus an extension (``with_suffix`` would cut names such as ``table.v2``)."""
    return stem.parent / (stem.name + extension)


def _sets_in(folder: Path) -> str:
    names = [p.name.removesuffix("_metrics.csv") for p in sorted(folder.glob("*_metrics.csv"))]
    return ", ".join(names) or "none"


# ----------------------------------------------------------------------------- table
def format_value(metric: str, value: float, decimals: int | None, signed: bool = False) -> str:
    places = decimals if decimals is not None else DECIMALS.get(metric.lower(), 4)
    return f"{value:+.{places}f}" if signed else f"{value:.{places}f}"


def pair_table(
    pairs: list[tuple[str, Results, Results]],
    metrics: list[str],
    labels: tuple[str, str],
    decimals: int | None,
    caption: str,
) -> tuple[str, list[list[str]]]:
    """Markdown text in the paper's layout (values of several metrics joined by " / ") and the
    CSV rows ``network, metric, without, with, delta`` at full precision."""
    joined = " / ".join(m.upper() if m.lower() in ("psnr", "ssim", "fid") else m for m in metrics)
    lines = [
        caption,
        "",
        f"| Network | {labels[0]} ({joined}) | {labels[1]} ({joined}) | Δ |",
        "|---|---|---|---|",
    ]
    csv_rows = [["network", "metric", "without", "with", "delta"]]
    for network, without, with_ in pairs:
        cells = {"without": [], "with": [], "delta": []}
        for metric in metrics:
            before, after = without.means[metric], with_.means[metric]
            delta = after - before
            cells["without"].append(format_value(metric, before, decimals))
            cells["with"].append(format_value(metric, after, decimals))
            cells["delta"].append(format_value(metric, delta, decimals, signed=True))
            csv_rows.append([network, metric, f"{before:.6f}", f"{after:.6f}", f"{delta:+.6f}"])
        lines.append(
            f"| {network} | {' / '.join(cells['without'])} | {' / '.join(cells['with'])} | "
            f"{' / '.join(cells['delta'])} |"
        )
    return "\n".join(lines) + "\n", csv_rows


def warn_if_different_images(network: str, without: Results, with_: Results) -> None:
    if sorted(without.images) != sorted(with_.images):
        print(
            f"warning: {network}: {without.path} and {with_.path} were computed on different "
            f"images ({len(without.images)} vs {len(with_.images)}); the delta compares unlike sets.",
            file=sys.stderr,
        )


# ----------------------------------------------------------------------------- sweep
def parse_sweep_entry(entry: str) -> tuple[float, Path]:
    gamma_text, sep, location = entry.partition(":")
    try:
        gamma = float(gamma_text)
    except ValueError:
        gamma = float("nan")
    if not sep or not location or not gamma > 0:
        raise TableError(
            f"--sweep entry {entry!r}: expected GAMMA:DIR with GAMMA > 0 (e.g. 0.001:results/x); "
            f"give the gamma = 0 run (no DiffLoss) with --baseline."
        )
    return gamma, Path(location)


def write_sweep(
    entries: list[tuple[float, Results]],
    baseline: Results | None,
    metrics: list[str],
    out: Path,
    size: tuple[int, int],
) -> None:
    entries = sorted(entries, key=lambda item: item[0])
    gammas = [gamma for gamma, _ in entries]
    panels = []
    for metric in metrics:
        values = [results.means[metric] for _, results in entries]
        hlines = [("without DiffLoss", baseline.means[metric])] if baseline else []
        panels.append(
            PlotPanel(
                [LineSeries("with DiffLoss", gammas, values, "C0", marker="o")],
                xlabel="γ (DiffLoss weight)",
                ylabel=metric,
                logx=True,
                hlines=hlines,
                xticks=gammas,
            )
        )
    save_line_plot(with_extension(out, ".png"), panels, size=(size[0] * len(metrics), size[1]))
    with with_extension(out, ".csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gamma", *metrics, "results"])
        if baseline is not None:
            writer.writerow([0.0, *(f"{baseline.means[m]:.6f}" for m in metrics), baseline.path])
        for gamma, results in entries:
            writer.writerow([gamma, *(f"{results.means[m]:.6f}" for m in metrics), results.path])


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--pair",
        nargs=3,
        action="append",
        metavar=("NETWORK", "WITHOUT", "WITH"),
        help="a table row: network name, results without and with DiffLoss (repeat for more rows)",
    )
    mode.add_argument(
        "--sweep",
        nargs="+",
        metavar="GAMMA:DIR",
        help="gamma-sweep plot: results folders with their DiffLoss weight",
    )
    parser.add_argument(
        "--set", dest="set_name", default=None, help="test set name: reads DIR/<set>_metrics.csv"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["psnr", "ssim"],
        help="metric columns to report (default: psnr ssim)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output path without extension (default: table, or gamma_sweep)",
    )
    parser.add_argument(
        "--decimals",
        type=int,
        default=None,
        help="decimal places in the Markdown table (default: 2 for PSNR and FID, 4 otherwise)",
    )
    parser.add_argument(
        "--labels",
        nargs=2,
        default=("without DiffLoss", "with DiffLoss"),
        metavar=("WITHOUT", "WITH"),
        help="column titles of the two runs",
    )
    parser.add_argument("--caption", default=None, help="line above the Markdown table")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="--sweep: results without DiffLoss, drawn as a dashed line",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(500, 400),
        metavar=("W", "H"),
        help="--sweep: size of each metric's panel in pixels (default: 500 400)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path("table" if args.pair else "gamma_sweep")
    if out.suffix in (".md", ".csv", ".png"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)

    def load(location: Path) -> Results:
        return read_results(find_metrics_csv(location, args.set_name), args.metrics)

    try:
        if args.pair:
            pairs = []
            for network, without_dir, with_dir in args.pair:
                without, with_ = load(Path(without_dir)), load(Path(with_dir))
                warn_if_different_images(network, without, with_)
                pairs.append((network, without, with_))
            sets = sorted({r.path.name.removesuffix("_metrics.csv") for p in pairs for r in p[1:]})
            caption = args.caption or f"Test set: {', '.join(sets)}; Δ = with - without."
            markdown, csv_rows = pair_table(
                pairs, args.metrics, tuple(args.labels), args.decimals, caption
            )
            with_extension(out, ".md").write_text(markdown, encoding="utf-8")
            with with_extension(out, ".csv").open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(csv_rows)
            print(markdown, end="")
            print(f"Wrote {with_extension(out, '.md')} and {with_extension(out, '.csv')}.")
        else:
            entries = []
            for entry in args.sweep:
                gamma, location = parse_sweep_entry(entry)
                entries.append((gamma, load(location)))
            baseline = load(args.baseline) if args.baseline else None
            write_sweep(entries, baseline, args.metrics, out, tuple(args.size))
            print(f"Wrote {with_extension(out, '.png')} and {with_extension(out, '.csv')}.")
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
