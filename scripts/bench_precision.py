"""Precision of DiffLoss when the prior runs in bf16 or fp16 (weights stored in that dtype),
against float32.

L_nat compares the prior's eps predictions for the clean and the restored image. When the two
images are close, the two predictions are close, and rounding in either branch does not cancel
in their difference: reduced precision puts a floor under L_nat and adds noise to its gradient.
This script measures that floor. For restored = clean + sigma * N(0, 1) at several sigmas (in
[0, 1] image units), with the same t and noise in every precision, it reports per dtype:

- L_nat and L_sem (batch means over ``--draws`` draws) and their ratio to float32;
- the relative difference ||g - g_fp32|| / ||g_fp32|| of the gradient, with respect to the
  restored image, of L_nat and of the whole DiffLoss (L_nat + lambda * L_sem).

``float16-unscaled`` is float16 without the prior's gradient scaling
(``fp16_grad_scaling: false``), to show what the scaling is for.

The prior comes from a training option file (its DiffLoss block's ``prior``), a preset, or the
small-UNet flags; every dtype uses the same weights. Clean images are smooth random images
(bicubic upsampling of 8x8 noise) unless ``--gt-folder`` gives real ones.

    python scripts/bench_precision.py --options options/demo/dehaze_demo_diffloss.yml \\
        --gt-folder datasets/demo_haze/val/clear --json precision_demo.json
    python scripts/bench_precision.py --json precision_11m.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffsr.data.cub_dataset import center_crop
from diffsr.data.file_client import list_image_files
from diffsr.losses import build_loss
from diffsr.utils.benchmark import (
    add_prior_choice_arguments,
    args_for_json,
    available_cores,
    machine_info,
    prior_choice_options,
    write_json_report,
)
from diffsr.utils.img_util import img2tensor, imread
from diffsr.utils.yaml_util import load_yaml

PRIOR_LOSS_TYPES = ("DiffLoss", "NaturalnessLoss", "SemanticLoss")
# Prior options of each --dtypes name.
DTYPES: dict[str, dict[str, Any]] = {
    "float32": {"dtype": "float32"},
    "bfloat16": {"dtype": "bfloat16"},
    "float16": {"dtype": "float16"},
    "float16-unscaled": {"dtype": "float16", "fp16_grad_scaling": False},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    prior = parser.add_argument_group("prior (an option file, a preset, or a small UNet)")
    prior.add_argument(
        "--options", type=Path, help="training option file; its DiffLoss block's prior is used"
    )
    add_prior_choice_arguments(prior)
    prior.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prior layout (DiffLoss's default: on)",
    )
    run = parser.add_argument_group("measurement")
    run.add_argument(
        "--dtypes",
        default="bfloat16,float16,float16-unscaled",
        help=f"compared with float32; from {', '.join(DTYPES)} (float16-unscaled: without the "
        "prior's gradient scaling)",
    )
    run.add_argument("--sigmas", default="0.2,0.05,0.01,0.002", help="restored - clean noise")
    run.add_argument("--lambda-sem", type=float, default=0.01, help="DiffLoss lambda_sem")
    run.add_argument("--size", type=int, default=64, help="image height = width")
    run.add_argument("--batch", type=int, default=4)
    run.add_argument("--draws", type=int, default=3, help="(t, noise) draws averaged per sigma")
    run.add_argument("--gt-folder", type=Path, help="clean images (else smooth random images)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--threads", type=int, default=available_cores(), help="torch CPU threads")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.dtype_names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in args.dtype_names if d not in DTYPES]
    if bad or not args.dtype_names:
        parser.error(f"--dtypes: unknown {bad}; choose from {', '.join(DTYPES)}.")
    try:
        args.sigma_values = [float(s) for s in args.sigmas.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sigmas {args.sigmas!r}: write numbers separated by commas.")
    if not args.sigma_values or min(args.sigma_values) <= 0:
        parser.error("--sigmas: give positive noise levels, e.g. 0.2,0.01.")
    if args.draws < 1 or args.batch < 1:
        parser.error("--draws and --batch must be >= 1.")
    return args


def prior_from_option_file(path: Path) -> dict[str, Any]:
    """The ``prior`` block of the first DiffLoss/NaturalnessLoss/SemanticLoss in ``train``."""
    if not path.is_file():
        raise SystemExit(f"--options {path}: no such file.")
    train = (load_yaml(path) or {}).get("train") or {}
    for key, block in train.items():
        if isinstance(block, dict) and block.get("type") in PRIOR_LOSS_TYPES:
            if not isinstance(block.get("prior"), dict):
                raise SystemExit(f"--options {path}: train.{key} has no 'prior' block.")
            return dict(block["prior"])
    raise SystemExit(
        f"--options {path}: no loss block of type {', '.join(PRIOR_LOSS_TYPES)} under 'train'."
    )


def clean_images(args: argparse.Namespace) -> torch.Tensor:
    """B x 3 x size x size in [0, 1]: center crops of ``--gt-folder`` or smooth random images."""
    if args.gt_folder is None:
        gen = torch.Generator().manual_seed(args.seed)
        coarse = torch.rand(args.batch, 3, 8, 8, generator=gen)
        return F.interpolate(coarse, size=args.size, mode="bicubic", align_corners=False).clamp(
            0, 1
        )
    try:
        paths = [args.gt_folder / name for name in list_image_files(args.gt_folder)][: args.batch]
    except OSError as error:
        raise SystemExit(f"--gt-folder: {error}") from None
    if len(paths) < args.batch:
        raise SystemExit(
            f"--gt-folder {args.gt_folder}: {len(paths)} images, need --batch {args.batch}."
        )
    images = []
    for path in paths:
        try:
            images.append(img2tensor(center_crop(imread(path), args.size)))
        except ValueError as error:
            raise SystemExit(f"{path}: {error}") from None
    return torch.stack(images)


def measure_dtype(
    args: argparse.Namespace, prior: dict[str, Any], dtype: str, clean: torch.Tensor
) -> list[dict[str, Any]]:
    """Per sigma: L_nat, L_sem (means over draws) and the gradients, under ``dtype``."""
    options = {**prior, **DTYPES[dtype], "channels_last": args.channels_last}
    loss = build_loss(
        {"type": "DiffLoss", "lambda_sem": args.lambda_sem, "prior": options, "device": args.device}
    )
    device = torch.device(args.device)
    rows = []
    for index, sigma in enumerate(args.sigma_values):
        gen = torch.Generator().manual_seed(args.seed + 1000 * (index + 1))
        noise = torch.randn(clean.shape, generator=gen)
        restored = (clean + sigma * noise).to(device).requires_grad_()
        target = clean.to(device)
        nat_sum = sem_sum = 0.0
        nat_grads, total_grads = [], []
        for draw in range(args.draws):
            loss.core.set_seed(args.seed + draw)  # the same t and noise in every dtype
            nat, sem = loss.core(restored, target)
            nat_mean, total = nat.mean(), (nat + args.lambda_sem * sem).mean()
            nat_grads.append(torch.autograd.grad(nat_mean, restored, retain_graph=True)[0])
            total_grads.append(torch.autograd.grad(total, restored)[0])
            nat_sum, sem_sum = nat_sum + nat_mean.item(), sem_sum + sem.mean().item()
        rows.append(
            {
                "sigma": sigma,
                "nat": nat_sum / args.draws,
                "sem": sem_sum / args.draws,
                "grad_nat": torch.stack(nat_grads).double().cpu(),
                "grad_total": torch.stack(total_grads).double().cpu(),
            }
        )
    return rows


def relative_difference(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).norm() / reference.norm()).item()


def compare(
    reference: list[dict[str, Any]], measured: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One JSON-ready row per (dtype, sigma) against the float32 ``reference`` rows."""
    table = []
    for dtype, rows in measured.items():
        for ref, row in zip(reference, rows):
            table.append(
                {
                    "dtype": dtype,
                    "sigma": row["sigma"],
                    "nat_float32": ref["nat"],
                    "nat": row["nat"],
                    "nat_ratio": row["nat"] / ref["nat"],
                    "sem_float32": ref["sem"],
                    "sem": row["sem"],
                    "sem_ratio": row["sem"] / ref["sem"],
                    "grad_nat_rel_diff": relative_difference(row["grad_nat"], ref["grad_nat"]),
                    "grad_total_rel_diff": relative_difference(
                        row["grad_total"], ref["grad_total"]
                    ),
                }
            )
    return table


def print_table(table: list[dict[str, Any]]) -> None:
    header = (
        f"{'dtype':<16} {'sigma':>7} {'L_nat fp32':>11} {'L_nat':>11} {'ratio':>7} "
        f"{'L_sem ratio':>11} {'grad L_nat diff':>15} {'grad DiffLoss diff':>18}"
    )
    print(header)
    print("-" * len(header))
    for r in table:
        print(
            f"{r['dtype']:<16} {r['sigma']:>7g} {r['nat_float32']:>11.3e} {r['nat']:>11.3e} "
            f"{r['nat_ratio']:>7.3f} {r['sem_ratio']:>11.3f} {r['grad_nat_rel_diff']:>15.1%} "
            f"{r['grad_total_rel_diff']:>18.1%}"
        )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.options is not None:
        prior = prior_from_option_file(args.options)
    else:
        prior = prior_choice_options(args)
    if "checkpoint" not in prior:
        logging.getLogger("diffsr.diffusion.prior").setLevel(logging.ERROR)
        print("prior weights: random (seed 0); pass a checkpoint for a trained prior's figures")
    clean = clean_images(args)
    reference = measure_dtype(args, prior, "float32", clean)
    measured = {d: measure_dtype(args, prior, d, clean) for d in args.dtype_names}
    table = compare(reference, measured)
    print(
        f"prior: {prior.get('preset') or prior.get('unet')}, checkpoint "
        f"{prior.get('checkpoint', 'none (random)')}, input {tuple(clean.shape)}, "
        f"channels_last {args.channels_last}, {args.draws} draws, device {args.device}"
    )
    print_table(table)
    if args.json:
        report = {
            "args": args_for_json(args),
            "prior": prior,
            "machine": machine_info(torch.device(args.device)),
            "results": table,
        }
        write_json_report(args.json, report)
    return table


if __name__ == "__main__":
    main()
