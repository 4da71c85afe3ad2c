"""Plot a logged metric or loss of one or more experiments against the iteration.

Examples:
    # validation PSNR with and without DiffLoss (the supplement's curve)
    python scripts/plot_curves.py experiments/fsdgn_l1 experiments/fsdgn_diffloss \\
        --metric psnr --labels "without DiffLoss" "with DiffLoss" --out fsdgn_psnr.png
    # a training loss, smoothed
    python scripts/plot_curves.py experiments/fsdgn_diffloss --metric l_total --smooth 0.9 --logy

Each SOURCE is an experiment folder or one log file. From a folder the first of these found is
read: ``metrics.jsonl`` (written by the trainer), the text logs ``train_*.log`` (in name order,
i.e. oldest first), TensorBoard event files (only when tensorboard is installed). A resumed run
logs some iterations again: the last record of an iteration wins. Writes the PNG (one line per
source) and a CSV of the plotted points next to it (same name, .csv).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from diffsr.utils.visualize import LineSeries, PlotPanel, save_line_plot

Record = dict[str, Any]
NON_METRIC_KEYS = ("iter", "epoch", "val_set")

VALIDATION_HEADER = re.compile(r"Validation (?P<set>.+?) @ iter (?P<iter>[\d,]+):\s*$")
VALIDATION_VALUE = re.compile(r"^\s+(?P<name>[\w.-]+): (?P<value>\S+)")
TRAINING_LINE = re.compile(
    r"\[epoch\s+(?P<epoch>\d+), iter\s+(?P<iter>[\d,]+)/[\d,]+, lr (?P<lr>\S+)\]"
)
LOSS_VALUE = re.compile(
    r"(?P<name>[A-Za-z_][\w.]*): (?P<value>[-+]?(?:[\d.]+(?:[eE][-+]?\d+)?|nan|inf))"
)


class CurveError(Exception):
    """A problem with the inputs, reported as one line."""


# ----------------------------------------------------------------------------- readers
def read_metrics_jsonl(path: Path) -> list[Record]:
    """The records of a trainer's ``metrics.jsonl``; malformed lines are skipped with a note
    (a crash can leave the last line unfinished)."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            print(
                f"note: {path}:{number}: skipping a line that is not JSON ({err}).", file=sys.stderr
            )
            continue
        if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
            print(
                f"note: {path}:{number}: skipping a record without an integer 'iter'.",
                file=sys.stderr,
            )
            continue
        records.append(record)
    return records


def read_text_logs(paths: Iterable[Path]) -> list[Record]:
    """Records parsed from diffsr's text logs: training lines and validation blocks."""
    records: list[Record] = []
    for path in paths:
        validation: Record | None = None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if validation is not None:
                match = VALIDATION_VALUE.match(line)
                if match and _is_number(match["value"]):
                    validation[match["name"]] = float(match["value"])
                    continue
                records.append(validation)
                validation = None
            header = VALIDATION_HEADER.search(line)
            if header:
                validation = {"iter": _int(header["iter"]), "val_set": header["set"]}
                continue
            training = TRAINING_LINE.search(line)
            if training:
                record: Record = {
                    "iter": _int(training["iter"]),
                    "epoch": int(training["epoch"]),
                    "lr": float(training["lr"]),
                }
                losses = line[line.rfind("]") + 1 :]
                record.update((m["name"], float(m["value"])) for m in LOSS_VALUE.finditer(losses))
                records.append(record)
        if validation is not None:
            records.append(validation)
    return records


def read_tensorboard(paths: Iterable[Path]) -> list[Record]:
    """Records from TensorBoard event files (tags ``losses/<key>``, ``metrics/<set>/<name>``,
    ``lr``, as the trainer writes them; other tags are kept under their full name)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records: list[Record] = []
    for path in paths:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            parts = tag.split("/")
            for event in accumulator.Scalars(tag):
                record: Record = {"iter": int(event.step)}
                if parts[0] == "metrics" and len(parts) == 3:
                    record.update(val_set=parts[1], **{parts[2]: float(event.value)})
                elif parts[0] == "losses" and len(parts) == 2:
                    record[parts[1]] = float(event.value)
                else:
                    record[tag] = float(event.value)
                records.append(record)
    return records


def load_records(source: Path) -> list[Record]:
    """All records of an experiment folder or a single log file (see the module help)."""
    if source.is_file():
        if source.suffix == ".jsonl":
            return read_metrics_jsonl(source)
        if "tfevents" in source.name:
            return _read_tensorboard_checked([source], source)
        return read_text_logs([source])
    if not source.is_dir():
        raise CurveError(f"{source}: no such experiment folder or log file.")
    if (source / "metrics.jsonl").is_file():
        return read_metrics_jsonl(source / "metrics.jsonl")
    logs = sorted(source.glob("train_*.log"))
    if logs:
        return read_text_logs(logs)
    events = sorted(source.rglob("events.out.tfevents.*"))
    if events:
        return _read_tensorboard_checked(events, source)
    raise CurveError(
        f"{source}: found no metrics.jsonl, train_*.log or TensorBoard event files; pass an "
        f"experiment folder (experiments/<name>) or a log file."
    )


def _read_tensorboard_checked(paths: list[Path], source: Path) -> list[Record]:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise CurveError(
            f"{source}: only TensorBoard event files here, and tensorboard is not installed "
            f"(pip install 'diffsr[tensorboard]'); skipping TensorBoard logs."
        ) from None
    return read_tensorboard(paths)


# ----------------------------------------------------------------------------- selection
def metric_points(
    records: list[Record], metric: str, val_set: str | None, source: str
) -> list[tuple[int, float]]:
    """``(iter, value)`` of ``metric``, sorted by iteration, the last record of an iteration
    winning. Validation metrics come from one validation set (``val_set``, or the only one)."""
    having = [r for r in records if metric in r]
    if not having:
        available = sorted({k for r in records for k in r if k not in NON_METRIC_KEYS})
        raise CurveError(
            f"{source}: no '{metric}' logged; available: {', '.join(available) or 'nothing'}."
        )
    val_sets = sorted({r["val_set"] for r in having if "val_set" in r})
    if val_set is not None:
        having = [r for r in having if r.get("val_set") == val_set]
        if not having:
            raise CurveError(
                f"{source}: '{metric}' is not logged for validation set '{val_set}'; it is for: "
                f"{', '.join(val_sets) or 'training records only'}."
            )
    elif len(val_sets) > 1:
        raise CurveError(
            f"{source}: '{metric}' is logged for several validation sets ({', '.join(val_sets)}); "
            f"choose one with --val-set."
        )
    latest: dict[int, float] = {}
    for record in having:
        latest[int(record["iter"])] = float(record[metric])
    return sorted(latest.items())


def exponential_moving_average(values: list[float], weight: float) -> list[float]:
    """``s_0 = v_0``, ``s_i = weight * s_(i-1) + (1 - weight) * v_i`` (non-finite values pass
    through without entering the average)."""
    smoothed, state = [], None
    for value in values:
        if not math.isfinite(value):
            smoothed.append(value)
            continue
        state = value if state is None else weight * state + (1.0 - weight) * value
        smoothed.append(state)
    return smoothed


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="experiment folder (experiments/<name>) or a log file",
    )
    parser.add_argument(
        "--metric",
        default="psnr",
        help="a validation metric (psnr, ssim, ...) or a logged loss key "
        "(l_pixel, l_total, ...) or lr (default: psnr)",
    )
    parser.add_argument(
        "--val-set", default=None, help="validation set name when several are logged"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="legend labels, one per source (default: folder names)",
    )
    parser.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="EMA weight in [0, 1) for noisy curves such as losses; raw "
        "points are drawn faintly behind (default: 0, off)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("curves.png"),
        help="output image (.png; .pdf, .svg also work); a CSV goes next to it (default: curves.png)",
    )
    parser.add_argument("--title", default="")
    parser.add_argument("--logy", action="store_true", help="logarithmic y axis")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(800, 500),
        metavar=("W", "H"),
        help="PNG size in pixels (default: 800 500)",
    )
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.sources):
        parser.error(f"--labels has {len(args.labels)} names for {len(args.sources)} sources.")
    if not 0.0 <= args.smooth < 1.0:
        parser.error(f"--smooth must be in [0, 1), got {args.smooth}.")
    if not args.out.suffix:
        args.out = args.out.with_suffix(".png")
    if min(args.size) < 100:
        parser.error(f"--size must be at least 100 x 100 pixels, got {args.size}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labels = args.labels or [_default_label(s) for s in args.sources]
    series: list[LineSeries] = []
    rows: list[list[Any]] = []
    try:
        for index, (source, label) in enumerate(zip(args.sources, labels)):
            points = metric_points(load_records(source), args.metric, args.val_set, str(source))
            iters = [it for it, _ in points]
            values = [value for _, value in points]
            color = f"C{index % 10}"
            if args.smooth > 0:
                smoothed = exponential_moving_average(values, args.smooth)
                series.append(LineSeries(f"_{label} raw", iters, values, color, alpha=0.25))
                series.append(LineSeries(label, iters, smoothed, color))
                rows += [[label, it, v, s] for it, v, s in zip(iters, values, smoothed)]
            else:
                marker = "o" if len(points) <= 30 else None
                series.append(LineSeries(label, iters, values, color, marker=marker))
                rows += [[label, it, v] for it, v in points]
            print(f"{source}: {len(points)} points of {args.metric}.")
    except CurveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ylabel = args.metric + (f" ({args.val_set})" if args.val_set else "")
    panel = PlotPanel(series, xlabel="iteration", ylabel=ylabel, title=args.title, logy=args.logy)
    save_line_plot(args.out, [panel], size=tuple(args.size))
    csv_path = args.out.with_suffix(".csv")
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "iter", args.metric] + (["smoothed"] if args.smooth else []))
        writer.writerows(rows)
    print(f"Wrote {args.out} and {csv_path}.")
    return 0


def _default_label(source: Path) -> str:
    return source.name if source.is_dir() else source.parent.name or source.stem


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
