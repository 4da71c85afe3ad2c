"""Run a grid of training runs over option values and seeds; tabulate and plot the results.

    python scripts/sweep.py -opt options/demo/dehaze_demo_diffloss.yml \\
        --set train.diffloss_opt.loss_weight=0,0.001,0.01 --seeds 3 --jobs 2 --out experiments/sweep_gamma

Every ``--set KEY=V1,V2,...`` is one axis of the grid (values are YAML; commas inside brackets
belong to the value, e.g. ``train.scheduler.periods=[200]``; a single value is a fixed override).
Each grid point runs with ``--seeds N`` values of ``manual_seed``: the option file's seed, +1,
... (runs go seed by seed, so a sweep stopped early has every point's first seeds). A seed fixes
the initialisation, the data order and augmentation, and DiffLoss's draws: runs of one seed at
different points are paired. Before any run starts the options of every grid point are parsed and validated, so a key
that is not an option or a value of the wrong type stops the sweep naming the key.

Runs live in ``OUT/runs/<point>_seed<S>/`` (each a normal diffsr/train.py experiment folder;
its console output in ``OUT/logs/``).
Re-running the same command resumes: finished runs are kept, unfinished ones continue
(``--auto_resume``) or restart. ``OUT/sweep.json`` pins the base options; a sweep of a different
option file (or a run whose overrides differ) is refused instead of mixed in. Several sweep
processes may work on one OUT at once (each run is claimed by a lock file). Creating the file
``OUT/STOP`` stops new runs from being launched (running ones finish).

Outputs (written atomically after every finished run): ``OUT/results.md`` and
``OUT/results.json`` (each final validation metric and the mean logged ``grad_share_*`` as
mean +- std over seeds) and ``OUT/<metric>.png`` (metric against the first swept key with
several values; one line per combination of the others).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffsr.utils.environment import describe_environment  # noqa: E402
from diffsr.utils.file_util import atomic_write_text  # noqa: E402
from diffsr.utils.options import OptionError, parse_options  # noqa: E402
from diffsr.utils.registry import LOSS_REGISTRY  # noqa: E402
from diffsr.utils.yaml_util import load_yaml, parse_scalar  # noqa: E402

__all__ = ["main", "parse_axes", "split_values", "summarise_runs"]

SWEEP_FORMAT = 1


class SweepError(ValueError):
    """A sweep's arguments or output folder are wrong; the message says which and what to do."""


# ------------------------------------------------------------------------------ the grid
def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` on commas outside brackets and quotes: ``[1,2],3`` -> 2 values."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    if any(v == "" for v in values):
        raise SweepError(f"--set ...={text!r}: an empty value; separate values with single commas.")
    return values


def parse_axes(items: list[str]) -> list[tuple[str, list[str]]]:
    """``['a.b=1,2', 'c=x']`` -> ``[('a.b', ['1', '2']), ('c', ['x'])]`` (value texts)."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        if "=" not in item:
            raise SweepError(f"--set {item!r}: expected KEY=V1,V2,...")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in dict(axes):
            raise SweepError(f"--set {key}: the key is given twice; list all its values once.")
        if key in ("manual_seed", "name") or key.startswith("path."):
            raise SweepError(f"--set {key}: the sweep sets this itself (use --seeds for seeds).")
        axes.append((key, split_values(text)))
    return axes


def point_label(point: list[tuple[str, str]]) -> str:
    """A folder-safe name of a grid point from all its keys (last dotted part when unique)."""
    short = [key.rsplit(".", 1)[-1] for key, _ in point]
    parts = [
        f"{name if short.count(name) == 1 else key}={value}"
        for name, (key, value) in zip(short, point)
    ]
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "_".join(parts or ["base"]))


def varied_keys(table: list[dict[str, Any]]) -> list[str]:
    """Keys whose value differs between grid points (all keys when none does)."""
    keys = list(dict.fromkeys(k for row in table for k, _ in row["point"]))
    varied = [k for k in keys if len({dict(row["point"]).get(k) for row in table}) > 1]
    return varied or keys


def _check_block_value(raw: dict[str, Any], key: str, text: str) -> None:
    """Type-check a value set inside a loss block against its constructor's default."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "train" or not parts[1].endswith("_opt"):
        return
    block = raw.get("train", {}).get(parts[1])
    if not isinstance(block, dict) or block.get("type") not in LOSS_REGISTRY:
        return
    param = inspect.signature(LOSS_REGISTRY.get(block["type"])).parameters.get(parts[2])
    if param is None or param.default in (inspect.Parameter.empty, None):
        return
    value, default = parse_scalar(text), param.default
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    wrong = (
        (numeric and (isinstance(value, bool) or not isinstance(value, (int, float))))
        or (isinstance(default, bool) and not isinstance(value, bool))
        or (isinstance(default, str) and not isinstance(value, str))
    )
    if wrong:
        raise SweepError(
            f"--set {key}: {text!r} is a {type(value).__name__}, but {block['type']}'s "
            f"{parts[2]} takes a {type(default).__name__} (default {default!r})."
        )


def validate_grid(
    opt_path: Path, axes: list[tuple[str, list[str]]], seeds: list[int]
) -> list[tuple[list[tuple[str, str]], int]]:
    """Every (grid point, seed), seed-major (a stopped sweep has covered every point with its
    first seeds), after parsing the options of each point; raises naming the key."""
    raw = load_yaml(opt_path)
    points = []
    for combo in itertools.product(*[[(k, v) for v in values] for k, values in axes]):
        point = list(combo)
        for key, text in point:
            _check_block_value(raw, key, text)
        overrides = [f"{k}={v}" for k, v in point]
        try:
            parse_options(opt_path, is_train=True, overrides=overrides)
        except (OptionError, FileNotFoundError) as err:
            keys = ", ".join(k for k, _ in point)
            raise SweepError(
                f"the grid point {overrides} (keys {keys}) is invalid: {err}"
            ) from None
        points.append(point)
    return [(point, seed) for seed in seeds for point in points]


# ------------------------------------------------------------------------- bookkeeping
def options_hash(opt_path: Path, overrides: list[str] | None = None) -> str:
    """SHA-256 of the base options (as loaded: comments do not count) and ``overrides``."""
    text = json.dumps([load_yaml(opt_path), overrides or []], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_manifest(out: Path, opt_path: Path) -> None:
    """Create ``OUT/sweep.json`` or refuse an OUT holding a sweep of other base options."""
    manifest = out / "sweep.json"
    digest = options_hash(opt_path)
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("base_hash") != digest:
            raise SweepError(
                f"{out} holds a sweep of other base options ({saved.get('options')}, hash "
                f"{str(saved.get('base_hash'))[:12]}) than {opt_path} (hash {digest[:12]}); "
                f"choose another --out or remove {out}."
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        manifest,
        json.dumps(
            {"format": SWEEP_FORMAT, "options": str(opt_path), "base_hash": digest}, indent=2
        ),
    )


def take_lock(path: Path) -> bool:
    """Claim a run for this process (several sweep processes may share one OUT); a lock
    left by a process that no longer exists is taken over."""
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
                os.kill(owner, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except PermissionError:
                return False  # alive, another user's
            return False
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        return True
    return False


def final_record(run_dir: Path) -> dict[str, Any] | None:
    """Summary of a finished run (``run.json`` with ``finished``), or None."""
    info = run_dir / "run.json"
    if not info.is_file():
        return None
    record = json.loads(info.read_text())
    return record if record.get("finished") else None


def summarise_metrics_log(path: Path, total_iter: int) -> dict[str, Any] | None:
    """Final validation metrics and mean grad shares of a run's metrics.jsonl, or None when
    it has no validation at ``total_iter`` (the run did not finish)."""
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    finals = [r for r in records if "val_set" in r and r["iter"] == total_iter]
    if not finals:
        return None
    metrics = {k: v for k, v in finals[-1].items() if k not in ("iter", "val_set")}
    shares: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            if key.startswith("grad_share_") and math.isfinite(value):
                shares.setdefault(key, []).append(value)
    for key, values in shares.items():
        metrics[f"{key}_mean"] = statistics.fmean(values)
        metrics[f"{key}_median"] = statistics.median(values)
    times = sorted(r["sec_per_iter"] for r in records if "sec_per_iter" in r)
    if times:
        metrics["sec_per_iter"] = times[len(times) // 2]
    return metrics


# ----------------------------------------------------------------------------- results
def summarise_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group finished runs by grid point: each metric's mean, sample std and count."""
    groups: dict[str, dict[str, Any]] = {}
    for run in runs:
        group = groups.setdefault(
            run["label"], {"label": run["label"], "point": run["point"], "seeds": [], "values": {}}
        )
        group["seeds"].append(run["seed"])
        for name, value in run["metrics"].items():
            group["values"].setdefault(name, []).append(value)
    table = []
    for group in groups.values():
        stats = {}
        for name, values in group["values"].items():
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            stats[name] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
            stats[name]["values"] = values
        table.append({**{k: group[k] for k in ("label", "point", "seeds")}, "metrics": stats})
    return sorted(table, key=lambda row: [_sort_key(v) for _, v in row["point"]])


def _sort_key(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then everything else in text order."""
    value = parse_scalar(text)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(text))


def markdown(table: list[dict[str, Any]]) -> str:
    if not table:
        return "No finished runs yet.\n"
    swept = varied_keys(table)
    names = sorted({n for row in table for n in row["metrics"]})
    names = [n for n in ("psnr", "ssim") if n in names] + [
        n for n in names if n not in ("psnr", "ssim")
    ]
    header = [*swept, "seeds", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        point = dict(row["point"])
        cells = [str(point.get(k, "")) for k in swept] + [str(len(row["seeds"]))]
        for name in names:
            stat = row["metrics"].get(name)
            if stat is None:
                cells.append("")
            elif stat["n"] > 1:
                cells.append(f"{stat['mean']:.4g} +- {stat['std']:.2g}")
            else:
                cells.append(f"{stat['mean']:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean +- sample standard deviation over seeds.\n"


def plot(table: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per validation metric against the first key with several values."""
    varied = varied_keys(table) if len(table) > 1 else []
    if not varied:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: plots skipped (pip install matplotlib).")
        return []
    x_key, written = varied[0], []
    names = [n for n in table[0]["metrics"] if not n.startswith(("grad_share", "sec_per"))]
    for name in names:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        lines: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        for row in table:
            point = dict(row["point"])
            rest = ", ".join(f"{k.rsplit('.', 1)[-1]}={point[k]}" for k in varied[1:])
            x = parse_scalar(point[x_key])
            if isinstance(x, (int, float)) and name in row["metrics"]:
                lines.setdefault(rest, []).append((float(x), row["metrics"][name]))
        xs_all = [x for pts in lines.values() for x, _ in pts]
        positive = [x for x in xs_all if x > 0]
        if positive and min(xs_all) >= 0 and max(positive) / min(positive) >= 100:
            ax.set_xscale("symlog", linthresh=min(positive) / 2)
        for rest, points in lines.items():
            points.sort(key=lambda item: item[0])
            xs = [x for x, _ in points]
            means = [s["mean"] for _, s in points]
            stds = [s["std"] if math.isfinite(s["std"]) else 0.0 for _, s in points]
            bar = ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=rest or None)
            for x, stat in points:
                ax.plot(
                    [x] * len(stat["values"]),
                    stat["values"],
                    ".",
                    alpha=0.4,
                    color=bar[0].get_color(),
                )
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel(x_key)
        ax.set_ylabel(name)
        ax.set_title(f"{name}: mean +- std over seeds (dots: seeds)", fontsize=9)
        if any(lines):
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{name}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)
    return written


def write_results(out: Path, axes: list[tuple[str, list[str]]], finished: list[dict]) -> None:
    table = summarise_runs(finished)
    record = {
        "axes": axes,
        "groups": table,
        "runs": finished,
        "environment": describe_environment(),
    }
    snapshot = os.environ.get("SWEEP_TREE_STATE")
    if snapshot:
        record["tree_state"] = snapshot
    atomic_write_text(out / "results.json", json.dumps(record, indent=2))
    atomic_write_text(out / "results.md", markdown(table))
    plot(table, out)


# ------------------------------------------------------------------------------ running
def run_command(args: argparse.Namespace, overrides: list[str], run_dir: Path) -> list[str]:
    return [
        args.python,
        str(args.train_script),
        "-opt",
        str(args.opt),
        "--auto_resume",
        "--set",
        *overrides,
        f"name={run_dir.name}",
        f"path.experiments_root={run_dir}",
    ]


def execute(args: argparse.Namespace, runs: list[tuple[list[tuple[str, str]], int]]) -> list:
    """Run what is not finished, ``--jobs`` at a time; returns the finished runs' summaries."""
    pending, finished, active = [], [], []
    for point, seed in runs:
        overrides = [f"{k}={v}" for k, v in point] + [f"manual_seed={seed}"]
        label = point_label(point)
        run_dir = args.out / "runs" / f"{label}_seed{seed}"
        digest = options_hash(args.opt, overrides)
        done = final_record(run_dir)
        if done is not None:
            if done["hash"] != digest:
                raise SweepError(
                    f"{run_dir} finished with other options (hash {done['hash'][:12]}, now "
                    f"{digest[:12]}); remove it or choose another --out."
                )
            finished.append(done)
            continue
        entry = {"label": label, "point": [[k, v] for k, v in point]}
        pending.append((run_dir, overrides, digest, {**entry, "seed": seed}))
    total_iter = {}
    for run_dir, overrides, _, _ in pending:
        opt = parse_options(args.opt, is_train=True, overrides=overrides)
        total_iter[run_dir] = opt["train"]["total_iter"]
    print(f"sweep: {len(finished)} run(s) finished before, {len(pending)} to run.", flush=True)
    write_results(args.out, args.axes, finished)
    failures = 0
    while pending or active:
        while pending and len(active) < args.jobs and not (args.out / "STOP").exists():
            run_dir, overrides, digest, entry = pending.pop(0)
            done = final_record(run_dir)  # finished meanwhile by another sweep process
            if done is not None and done["hash"] == digest:
                finished.append(done)
                continue
            log_path = args.out / "logs" / f"{run_dir.name}.out"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            if not take_lock(log_path.with_suffix(".lock")):
                print(f"sweep: {run_dir.name} is running in another sweep process; skipped")
                continue
            log = log_path.open("a")
            command = run_command(args, overrides, run_dir)
            print(f"sweep: start {run_dir.name}", flush=True)
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            active.append((process, log, run_dir, overrides, digest, entry, time.time()))
        if not active:
            if pending:
                print(f"sweep: {args.out / 'STOP'} exists; {len(pending)} run(s) not launched.")
            break
        time.sleep(args.poll)
        for item in list(active):
            process, log, run_dir, overrides, digest, entry, started = item
            if process.poll() is None:
                continue
            active.remove(item)
            log.close()
            (args.out / "logs" / f"{run_dir.name}.lock").unlink(missing_ok=True)
            metrics = summarise_metrics_log(run_dir / "metrics.jsonl", total_iter[run_dir])
            if process.returncode != 0 or metrics is None:
                failures += 1
                print(
                    f"sweep: {run_dir.name} failed (exit {process.returncode}); see "
                    f"{args.out / 'logs' / (run_dir.name + '.out')}",
                    flush=True,
                )
                continue
            record = {
                **entry,
                "overrides": overrides,
                "hash": digest,
                "finished": True,
                "wall_s": round(time.time() - started, 1),
                "metrics": metrics,
            }
            atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2))
            finished.append(record)
            write_results(args.out, args.axes, finished)
            print(f"sweep: done {run_dir.name}: {metrics}", flush=True)
    write_results(args.out, args.axes, finished)
    return finished if not failures else finished + [None] * failures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-opt", "--opt", type=Path, required=True, help="base option file")
    parser.add_argument(
        "--set",
        dest="axes_text",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=V1,V2",
        help="an axis of the grid (one value: a fixed override)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per grid point (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's folder")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the runs")
    parser.add_argument(
        "--train-script", type=Path, default=REPO / "diffsr" / "train.py", help=argparse.SUPPRESS
    )
    parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the grid and list the runs only"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.opt.is_file():
            raise SweepError(f"-opt {args.opt}: no such option file.")
        args.axes = parse_axes(args.axes_text)
        base_seed = load_yaml(args.opt).get("manual_seed", 0)
        seeds = [int(base_seed) + i for i in range(args.seeds)]
        runs = validate_grid(args.opt, args.axes, seeds)
        if args.dry_run:
            for point, seed in runs:
                print(" ".join(f"{k}={v}" for k, v in point), f"manual_seed={seed}")
            return 0
        check_manifest(args.out, args.opt)
        results = execute(args, runs)
    except (SweepError, OptionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    print(f"sweep: results in {args.out / 'results.md'}")
    return 1 if any(r is None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
