"""Restore a folder, LQ/GT pairs or an LMDB with one or several checkpoints and compare them.

Examples:
    # Dense-Haze test pairs, without and with DiffLoss; FSDGN built from its training options
    python scripts/batch_test.py --lq datasets/Dense-Haze/test/hazy \\
        --gt datasets/Dense-Haze/test/GT --name-mapping dense_haze \\
        --opt options/train/fsdgn_densehaze.yml \\
        --ckpt without=experiments/fsdgn_l1/models/net_g_latest.pth \\
        --ckpt with=experiments/fsdgn_diffloss/models/net_g_latest.pth \\
        --metrics psnr ssim lpips --out results/fsdgn_densehaze
    # a folder without ground truth, the network named by its type, large images in tiles
    python scripts/batch_test.py --lq photos --arch AODNet --ckpt aod=aodnet.pth \\
        --tile 512 --tile-overlap 32 --out results/photos
    # an LMDB made by scripts/create_lmdb.py (recognised by its data.mdb), Y-channel PSNR/SSIM
    python scripts/batch_test.py --lq datasets/Rain100H_input.lmdb \\
        --gt datasets/Rain100H_target.lmdb --arch EfDeRain --ckpt efderain=net_g.pth \\
        --y-channel --out results/rain100h

Writes under --out:
    <ckpt name>/<image>.png             each checkpoint's restored images (--no-save-images: none)
    <ckpt name>/<set>_metrics.{csv,md}  its per-image and mean metrics, in diffsr/test.py's
                                        format (scripts/make_table.py reads them)
    metrics.{csv,md}                    every checkpoint side by side: one column per metric
                                        and checkpoint (psnr/without, psnr/with, ...), mean last

Metrics (with --gt) come from the METRIC registry: psnr, ssim, lpips (AlexNet LPIPS, lower is
better) and fid (set-level, lower is better). LPIPS and FID need published weight files (see
docs/lpips_fid.md); when they are missing the metric is skipped with a message saying which
file to get. With --opt and no --metrics, the option file's val.metrics are used.

An input that cannot be read (corrupt, empty, missing, size mismatch) is named on stderr and
skipped; the other images are still restored and the exit status is 1. Status 2: bad
arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Any

import torch
from tqdm import tqdm

from diffsr.data import build_dataloader, build_dataset
from diffsr.data.pairing import NAME_MAPPING_PRESETS
from diffsr.metrics.metric_set import MetricSet
from diffsr.test import (
    SkipUnreadable,
    UsageError,
    add_network_arguments,
    add_tile_arguments,
    build_named_networks,
    device_from_args,
    readable_samples,
    report_failures,
    restore,
    run_command,
    tile_options_from_args,
    write_metrics_tables,
)
from diffsr.utils.file_util import mkdirs
from diffsr.utils.img_util import imwrite, tensor2img
from diffsr.utils.options import OptionError, parse_options

METRIC_NAMES = ("psnr", "ssim", "lpips", "fid")
LMDB_MARKER = "data.mdb"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("input")
    data.add_argument("--lq", type=Path, required=True, help="input image folder or .lmdb folder")
    data.add_argument("--gt", type=Path, help="ground-truth folder or .lmdb (enables metrics)")
    data.add_argument(
        "--name-mapping",
        default="identity",
        choices=sorted(NAME_MAPPING_PRESETS),
        help="how LQ and GT file names pair up (default: identity = same name)",
    )
    data.add_argument("--recursive", action="store_true", help="also read sub-folders")
    data.add_argument(
        "--scale",
        type=int,
        default=1,
        help="super-resolution factor: GT is SCALE times the LQ size (default: 1)",
    )
    data.add_argument("--name", help="name of the set in the tables (default: --lq folder name)")
    add_network_arguments(parser)
    add_tile_arguments(parser)
    metrics = parser.add_argument_group("metrics (with --gt)")
    metrics.add_argument(
        "--metrics",
        nargs="+",
        choices=METRIC_NAMES,
        help="default: psnr ssim (or val.metrics of --opt)",
    )
    metrics.add_argument("--crop-border", type=int, default=0, help="pixels cut from each side")
    metrics.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on BT.601 Y")
    metrics.add_argument("--lpips-weights", help="AlexNet file (default: its standard path)")
    metrics.add_argument("--lpips-lin", help="LPIPS linear heads alex.pth (default: standard)")
    metrics.add_argument("--fid-weights", help="FID Inception file (default: its standard path)")
    metrics.add_argument(
        "--fid-crops",
        nargs=2,
        type=int,
        metavar=("SIZE", "PER_IMAGE"),
        help="FID on random SIZE x SIZE crops, PER_IMAGE per image (for small sets)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, required=True, help="output folder (created)")
    output.add_argument("--suffix", default="", help="appended to restored image names")
    output.add_argument("--no-save-images", action="store_true", help="write tables only")
    return parser.parse_args(argv)


def metric_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``val.metrics``-style blocks for ``--metrics`` (or the option file's)."""
    if args.metrics is None and args.opt is not None:
        try:
            configured = parse_options(args.opt, is_train=False)["val"].get("metrics")
        except (OptionError, FileNotFoundError, ValueError) as err:
            raise UsageError(f"--opt: {err}") from None
        if configured:
            return dict(configured)
    pixel = {"crop_border": args.crop_border, "test_y_channel": args.y_channel}
    blocks: dict[str, dict[str, Any]] = {
        "psnr": {"type": "calculate_psnr", **pixel},
        "ssim": {"type": "calculate_ssim", **pixel},
        "lpips": {
            "type": "calculate_lpips",
            "better": "lower",
            "crop_border": args.crop_border,
            "weights_path": args.lpips_weights,
            "lin_path": args.lpips_lin,
        },
        "fid": {"type": "FID", "better": "lower", "weights_path": args.fid_weights},
    }
    if args.fid_crops:
        blocks["fid"]["crops"] = {"size": args.fid_crops[0], "per_image": args.fid_crops[1]}
    return {name: blocks[name] for name in (args.metrics or ("psnr", "ssim"))}


def backend_of(folder: Path, flag: str) -> str:
    if not folder.exists():
        raise UsageError(f"{flag} {folder}: no such folder.")
    return "lmdb" if (folder / LMDB_MARKER).is_file() else "disk"


def dataset_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The test-phase dataset block for --lq [--gt]."""
    backend = backend_of(args.lq, "--lq")
    block: dict[str, Any] = {
        "name": name,
        "phase": "test",
        "io_backend": {"type": backend},
        "dataroot_lq": str(args.lq),
    }
    if backend == "disk":
        block["recursive"] = args.recursive
    if args.gt is None:
        return {**block, "type": "SingleImageDataset", "role": "lq"}
    if backend_of(args.gt, "--gt") != backend:
        raise UsageError("--lq and --gt must both be image folders or both be LMDBs.")
    return {
        **block,
        "type": "PairedImageDataset",
        "dataroot_gt": str(args.gt),
        "name_mapping": args.name_mapping,
        "scale": args.scale,
    }


def side_by_side(
    per_checkpoint: dict[str, list[dict[str, Any]]],
    names: dict[str, list[str]],
    means: dict[str, dict[str, float]],
) -> tuple[list[dict[str, Any]], list[str], dict[str, float]]:
    """Rows, per-image column names and means with one column per metric and checkpoint."""
    checkpoints = list(per_checkpoint)
    metrics = list(dict.fromkeys(m for ckpt in checkpoints for m in means[ckpt]))
    columns = [f"{m}/{c}" for m in metrics for c in checkpoints if m in names[c]]
    joined_means = {f"{m}/{c}": means[c][m] for m in metrics for c in checkpoints if m in means[c]}
    rows = []
    for index, first in enumerate(per_checkpoint[checkpoints[0]]):
        row = {"image": first["image"]}
        for ckpt in checkpoints:
            row.update(
                {f"{m}/{ckpt}": v for m, v in per_checkpoint[ckpt][index].items() if m != "image"}
            )
        rows.append(row)
    return rows, columns, joined_means


def print_summary(set_name: str, means: dict[str, dict[str, float]]) -> None:
    checkpoints = list(means)
    metrics = list(dict.fromkeys(m for ckpt in checkpoints for m in means[ckpt]))
    print(f"\n{set_name}: mean metrics")
    print("| metric | " + " | ".join(checkpoints) + " |")
    print("|---" * (len(checkpoints) + 1) + "|")
    for metric in metrics:
        cells = [f"{means[c][metric]:.4f}" if metric in means[c] else "" for c in checkpoints]
        print(f"| {metric} | " + " | ".join(cells) + " |")


def run(args: argparse.Namespace) -> int:
    tile = tile_options_from_args(args)
    set_name = args.name or args.lq.name.removesuffix(".lmdb")
    dataset_opt = dataset_options(args, set_name)
    device = device_from_args(args)
    networks = build_named_networks(args, device)
    metric_blocks = metric_options(args) if args.gt is not None else {}
    try:
        dataset = SkipUnreadable(build_dataset(dataset_opt))
    except (OSError, ValueError) as err:
        raise UsageError(f"input: {err}") from None
    loader = build_dataloader(dataset, dataset_opt, "test")
    mkdirs(args.out)
    metric_sets = {name: MetricSet(metric_blocks) for name in networks}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in networks}
    failures: list[str] = []
    suffix = f"_{args.suffix}" if args.suffix else ""
    bar = tqdm(loader, desc=f"{set_name} x {len(networks)} ckpt", unit="img")
    with torch.no_grad():
        for data in readable_samples(bar, failures):
            lq = data["lq"].to(device)
            stem = Path(data["lq_path"][0]).stem
            reference = tensor2img(data["gt"]) if "gt" in data else None
            for name, net in networks.items():
                restored = tensor2img(restore(net, lq, tile))
                if not args.no_save_images:
                    imwrite(restored, args.out / name / f"{stem}{suffix}.png")
                if reference is not None and metric_blocks:
                    values = metric_sets[name].update(restored, reference)
                    rows[name].append({"image": stem, **values})
            bar.set_postfix(unreadable=len(failures))
    if any(rows.values()):
        names = {name: list(metric_sets[name].per_image) for name in networks}
        means = {name: metric_sets[name].compute() for name in networks}
        for name in networks:
            stem = args.out / name / f"{set_name}_metrics"
            write_metrics_tables(stem, rows[name], names[name], means[name])
        write_metrics_tables(args.out / "metrics", *side_by_side(rows, names, means))
        print_summary(set_name, means)
    print(f"Results in {args.out}")
    return report_failures(failures)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
