"""Test a trained model: ``python diffsr/test.py -opt options/test/<file>.yml``.

Every ``datasets.test_*`` (or ``val*``) block is restored with ``network_g`` loaded from
``path.pretrain_network_g``; restored images go to ``results/<name>/visualization/<set>/`` and
per-image plus mean metrics to ``results/<name>/<set>_metrics.{csv,md}``.

Large images: ``--tile 512 --tile-overlap 32`` (or ``val.tile: {size: 512, overlap: 32}`` in
the option file) restores them in overlapping tiles (see
``diffsr.utils.tiling``). An input that cannot be read is reported and skipped; the other
images are still restored and measured, and the exit status is then 1 (0 when every image was
restored, 2 for option errors).

This module also holds the pieces shared by the other evaluation tools
(``scripts/batch_test.py``, ``scripts/eval_classification.py``): reading test sets without
stopping at a bad file, restoring an image (tiled or not), loading networks named on the
command line, and writing metric tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the package, not sibling modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import csv
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset
from tqdm import tqdm

from diffsr.archs import build_network
from diffsr.data import build_dataloader, build_dataset
from diffsr.metrics.metric_set import MetricSet
from diffsr.models import build_model
from diffsr.models.checkpoint import load_network
from diffsr.models.loss_terms import as_output_list
from diffsr.utils.file_util import atomic_write_text, mkdirs
from diffsr.utils.img_util import imwrite, tensor2img
from diffsr.utils.logger import get_root_logger
from diffsr.utils.misc import get_time_str, resolve_device
from diffsr.utils.options import OptionError, parse_options
from diffsr.utils.registry import RegistryError, import_user_modules
from diffsr.utils.tiling import RAMPS, TileOptions, tiled_forward
from diffsr.utils.yaml_util import parse_scalar

__all__ = [
    "READ_ERRORS",
    "SetResult",
    "SkipUnreadable",
    "UsageError",
    "add_network_arguments",
    "add_tile_arguments",
    "build_named_networks",
    "device_from_args",
    "load_restoration_network",
    "main",
    "metrics_tables",
    "network_options",
    "parse_named_paths",
    "readable_samples",
    "report_failures",
    "restore",
    "run_command",
    "test_dataset",
    "tile_options_from_args",
    "tile_options_from_opt",
    "write_metrics_tables",
]

logger = logging.getLogger("diffsr")

# What reading a broken, missing or mismatched input raises (diffsr.data and img_util).
READ_ERRORS = (OSError, ValueError, KeyError)
PARAM_KEYS = ("auto", "params", "params_ema")


class UsageError(ValueError):
    """A command-line argument is wrong; reported as one ``error:`` line with exit status 2."""


# ----------------------------------------------------------------------------- reading
def _message(err: BaseException) -> str:
    # KeyError's str() is the repr of its argument; show the message itself.
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


class SkipUnreadable(Dataset):
    """Wraps a dataset so that a sample that cannot be read becomes ``{'error': message}``.

    The message comes from the dataset (it names the file). Iterate with
    :func:`readable_samples` to skip and record such samples while the others go on.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.opt = getattr(dataset, "opt", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except READ_ERRORS as err:
            return {"error": _message(err)}


def readable_samples(batches: Iterable[dict[str, Any]], failures: list[str]) -> Iterator[dict]:
    """The batches of a :class:`SkipUnreadable` loader that could be read.

    Each unreadable one is logged and its message appended to ``failures``.
    """
    for batch in batches:
        if "error" in batch:
            for message in batch["error"]:
                logger.error("Skipped an unreadable input: %s", message)
                failures.append(message)
            continue
        yield batch


def report_failures(failures: list[str]) -> int:
    """Print every unreadable input to stderr; the exit status (1 if any, else 0)."""
    if not failures:
        return 0
    print(f"error: {len(failures)} input(s) could not be read and were skipped:", file=sys.stderr)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    return 1


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A script's ``main``: ``run(args)`` with the root logger set up; its exit status.

    A :class:`UsageError` is printed as one ``error:`` line on stderr and gives status 2.
    """
    get_root_logger()
    try:
        return run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------- restoring
@torch.no_grad()
def restore(net: nn.Module, lq: torch.Tensor, tile: TileOptions | None = None) -> torch.Tensor:
    """Final output of ``net`` for ``lq`` (B x 3 x H x W in [0, 1]), float32, not clamped.

    The network runs in eval mode (its mode is restored afterwards); with ``tile`` it runs on
    overlapping tiles (:func:`diffsr.utils.tiling.tiled_forward`).
    """

    def final_output(x: torch.Tensor) -> torch.Tensor:
        return as_output_list(net(x))[-1].float()

    was_training = net.training
    net.eval()
    try:
        return final_output(lq) if tile is None else tiled_forward(final_output, lq, tile)
    finally:
        net.train(was_training)


# ----------------------------------------------------------------------------- tables
def metrics_tables(
    rows: list[dict[str, Any]], names: list[str], means: dict[str, float]
) -> tuple[str, str]:
    """CSV and Markdown texts of per-image rows plus a final ``mean`` row.

    Set-level metrics (FID) have no per-image value: they appear in the mean row only.
    """
    extra = [n for n in means if n not in names]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = names + extra
    writer.writerow(["image", *columns])
    for row in rows:
        writer.writerow([row["image"], *(f"{row[n]:.6f}" for n in names), *([""] * len(extra))])
    writer.writerow(["mean", *(f"{means[n]:.6f}" for n in columns)])
    lines = ["| image | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in rows:
        cells = [f"{r[n]:.4f}" for n in names] + ["" for _ in extra]
        lines.append(f"| {r['image']} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{means[n]:.4f}**" for n in columns) + " |")
    return buffer.getvalue(), "\n".join(lines) + "\n"


def write_metrics_tables(
    stem: str | Path, rows: list[dict[str, Any]], names: list[str], means: dict[str, float]
) -> None:
    """Write ``<stem>.csv`` and ``<stem>.md`` (see :func:`metrics_tables`), atomically."""
    csv_text, md_text = metrics_tables(rows, names, means)
    stem = Path(stem)
    atomic_write_text(stem.with_name(stem.name + ".csv"), csv_text)
    atomic_write_text(stem.with_name(stem.name + ".md"), md_text)


# ----------------------------------------------------------------------------- test sets
@dataclass
class SetResult:
    """Mean metrics of one test set (empty without ground truth) and its unreadable inputs."""

    means: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@torch.no_grad()
def test_dataset(
    model: Any, loader: Any, opt: dict[str, Any], tile: TileOptions | None = None
) -> SetResult:
    """Restore one test set; write images and metric tables.

    ``loader`` should iterate a :class:`SkipUnreadable` dataset: unreadable samples are then
    skipped and listed in the result instead of stopping the run.
    """
    dataset_opt = getattr(loader.dataset, "opt", None)
    name = getattr(dataset_opt, "name", "") or "test"
    out_dir = Path(opt["path"]["visualization"]) / name
    mkdirs(out_dir)
    metrics = MetricSet((opt.get("val") or {}).get("metrics"))
    suffix = f"_{opt['val']['suffix']}" if (opt.get("val") or {}).get("suffix") else ""
    result = SetResult()
    rows: list[dict[str, Any]] = []
    restored_count = 0
    batches = tqdm(loader, desc=f"test {name}", unit="img")
    for data in readable_samples(batches, result.failures):
        model.feed_data(data)
        output = model.test() if tile is None else restore(model.inference_net(), model.lq, tile)
        restored = tensor2img(output)
        stem = Path(data["lq_path"][0]).stem
        imwrite(restored, out_dir / f"{stem}{suffix}.png")
        restored_count += 1
        if model.gt is not None and metrics.names:
            rows.append({"image": stem, **metrics.update(restored, tensor2img(model.gt))})
    if not rows:
        logger.info(
            "Test set %s: %d images restored to %s (no metrics).", name, restored_count, out_dir
        )
        return result
    result.means = metrics.compute()
    root = Path(opt["path"]["results_root"])
    write_metrics_tables(root / f"{name}_metrics", rows, list(metrics.per_image), result.means)
    logger.info("Test set %s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in result.means.items()))
    return result


# ----------------------------------------------------------------------------- command line
def add_tile_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tile SIZE``, ``--tile-overlap N`` and ``--tile-ramp`` (see ``diffsr.utils.tiling``)."""
    group = parser.add_argument_group("tiled inference (for images too large for one pass)")
    group.add_argument(
        "--tile", type=int, default=None, metavar="SIZE", help="tile size in pixels (default: off)"
    )
    group.add_argument(
        "--tile-overlap",
        type=int,
        default=32,
        metavar="N",
        help="overlap of neighbouring tiles in pixels (default: 32)",
    )
    group.add_argument(
        "--tile-ramp", choices=RAMPS, default="cosine", help="blending weights (default: cosine)"
    )


def tile_options_from_opt(opt: dict[str, Any]) -> TileOptions | None:
    """``val.tile: {size, overlap, ramp}`` of an option file (None when absent)."""
    block = (opt.get("val") or {}).get("tile")
    if not block:
        return None
    try:
        return TileOptions(block["size"], block["overlap"], block["ramp"])
    except ValueError as err:
        raise UsageError(f"val.tile: {err}") from None


def tile_options_from_args(args: argparse.Namespace) -> TileOptions | None:
    if args.tile is None:
        return None
    try:
        return TileOptions(args.tile, args.tile_overlap, args.tile_ramp)
    except ValueError as err:
        raise UsageError(f"--tile/--tile-overlap: {err}") from None


def add_network_arguments(parser: argparse.ArgumentParser, require_ckpt: bool = True) -> None:
    """Arguments naming restoration networks: ``--ckpt``, ``--opt`` or ``--arch``, ``--device``."""
    group = parser.add_argument_group("restoration networks")
    group.add_argument(
        "--ckpt",
        action="append",
        default=[],
        required=require_ckpt,
        metavar="NAME=PATH",
        help="a network file (repeat for several; NAME labels its outputs, default: file stem)",
    )
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--opt", type=Path, help="training option file whose network_g builds the network"
    )
    source.add_argument("--arch", help="registered network type, e.g. FSDGN (with --arch-kw)")
    group.add_argument(
        "--arch-kw",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword of --arch (value read as YAML; repeat for several)",
    )
    group.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module or .py file to import first (registers your own --arch)",
    )
    group.add_argument(
        "--param-key",
        choices=PARAM_KEYS,
        default="auto",
        help="weights to load from each file: auto = params_ema when present, else params",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N"
    )


def _split_assignment(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{what} {text!r}: expected KEY=VALUE.")
    return key.strip(), value


def parse_named_paths(items: list[str], what: str) -> dict[str, Path]:
    """``NAME=PATH`` (or just ``PATH``, named by its stem) items as an ordered name -> path map.

    Every path must be an existing file; names must be unique.
    """
    named: dict[str, Path] = {}
    for item in items:
        name, path = _split_assignment(item, what) if "=" in item else (Path(item).stem, item)
        path = Path(path)
        if name in named:
            raise UsageError(f"{what}: the name {name!r} is used twice; write NAME=PATH.")
        if "/" in name or name in (".", ".."):
            raise UsageError(f"{what}: {name!r} cannot name an output folder; choose another.")
        if not path.is_file():
            raise UsageError(f"{what} {name}: the file {str(path)!r} does not exist.")
        named[name] = path
    return named


def network_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``network_g`` block named by ``--opt`` or ``--arch`` / ``--arch-kw``."""
    try:
        import_user_modules(args.imports, Path.cwd())
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise UsageError(f"--import: {err}") from None
    if args.opt is not None:
        if args.arch_kw:
            raise UsageError("--arch-kw goes with --arch, not with --opt.")
        try:
            return dict(parse_options(args.opt, is_train=False)["network_g"])
        except (OptionError, FileNotFoundError, ValueError) as err:
            raise UsageError(f"--opt: {err}") from None
    if args.arch is None:
        raise UsageError("name the network: --opt TRAIN_OPTIONS.yml or --arch TYPE.")
    block: dict[str, Any] = {"type": args.arch}
    for item in args.arch_kw:
        key, value = _split_assignment(item, "--arch-kw")
        block[key] = parse_scalar(value)
    return block


def load_restoration_network(
    network_opt: Mapping[str, Any],
    path: str | Path,
    param_key: str = "auto",
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Build ``network_opt`` (``{type: ..., **kwargs}``), load ``path`` strictly, eval mode.

    ``param_key``: ``params``, ``params_ema`` or ``auto`` (``params_ema`` when the file has it,
    as validation during training uses the EMA weights when there are any).
    """
    net = build_network(dict(network_opt))
    load_network(net, path, strict=True, param_key=param_key)
    return net.to(device).eval()


def device_from_args(args: argparse.Namespace) -> torch.device:
    """The device named by ``--device`` (see :func:`add_network_arguments`).

    Raises :class:`UsageError` when it is not a device name or not available here.
    """
    try:
        return resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device: {err}") from None


def build_named_networks(args: argparse.Namespace, device: torch.device) -> dict[str, nn.Module]:
    """The networks of ``--ckpt`` (built from ``--opt`` / ``--arch``), by name."""
    checkpoints = parse_named_paths(args.ckpt, "--ckpt")
    if not checkpoints:
        return {}
    block = network_options(args)
    networks = {}
    for name, path in checkpoints.items():
        try:
            networks[name] = load_restoration_network(block, path, args.param_key, device)
        except (RegistryError, RuntimeError, KeyError, ValueError, TypeError) as err:
            raise UsageError(f"--ckpt {name}={path}: cannot load it into {block}: {err}") from None
    return networks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-opt", "--opt", required=True, help="path to the test option YAML file")
    parser.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE")
    add_tile_arguments(parser)
    args = parser.parse_args(argv)
    try:
        opt = parse_options(args.opt, is_train=False, overrides=args.set)
        tile = tile_options_from_args(args) or tile_options_from_opt(opt)
    except (OptionError, FileNotFoundError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = Path(opt["path"]["results_root"])
    mkdirs(root)
    get_root_logger(root / f"test_{opt['name']}_{get_time_str()}.log")
    for note in opt["dialect_notes"]:  # keys of other codebases, mapped or inert
        logger.info(note)
    model = build_model(opt)
    if tile is not None and not hasattr(model, "inference_net"):
        print(f"error: --tile: {type(model).__name__} has no inference_net().", file=sys.stderr)
        return 2
    failures: list[str] = []
    for dataset_opt in opt["datasets"].values():
        dataset = SkipUnreadable(
            build_dataset(dataset_opt, seed=opt["manual_seed"], scale=opt["scale"])
        )
        loader = build_dataloader(
            dataset, dataset_opt, dataset_opt["phase"], seed=opt["manual_seed"]
        )
        failures += test_dataset(model, loader, opt, tile).failures
    return report_failures(failures)


if __name__ == "__main__":
    sys.exit(main())
