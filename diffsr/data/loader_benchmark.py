"""Measure train-loader throughput (images/s) for disk vs LMDB input and several worker counts.

    python -m diffsr.data.loader_benchmark                      # the demo set (make_demo_data.py)
    python -m diffsr.data.loader_benchmark --disk LQ_DIR GT_DIR --lmdb LQ.lmdb GT.lmdb

Each setting reads ``--samples`` training samples (PairedImageDataset with random crop, flips
and rotations) after one warm-up batch, which absorbs the start-up of the worker processes;
the median of ``--repeats`` runs is reported. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from diffsr.data import build_dataloader, build_dataset

DEMO_ROOT = "datasets/demo_haze"


def images_per_second(
    lq: str, gt: str, backend: str, workers: int, batch_size: int, gt_size: int, samples: int
) -> float:
    """Throughput of one loader configuration, warm-up batch excluded."""
    opt = {
        "name": "benchmark",
        "type": "PairedImageDataset",
        "phase": "train",
        "dataroot_lq": lq,
        "dataroot_gt": gt,
        "io_backend": {"type": backend},
        "gt_size": gt_size,
        "use_hflip": True,
        "use_rot": True,
        "batch_size_per_gpu": batch_size,
        "num_worker_per_gpu": workers,
    }
    dataset = build_dataset(opt)
    opt["dataset_enlarge_ratio"] = max(1, -(-(samples + batch_size) // len(dataset)))
    loader = build_dataloader(dataset, opt, "train")
    batches = iter(loader)
    next(batches)  # warm-up: worker start, first file opens
    start, seen = time.perf_counter(), 0
    while seen < samples:
        seen += next(batches)["lq"].shape[0]
    elapsed = time.perf_counter() - start
    del batches, loader  # stop the workers before the next configuration
    return seen / elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--disk",
        nargs=2,
        metavar=("LQ", "GT"),
        default=[f"{DEMO_ROOT}/train/hazy", f"{DEMO_ROOT}/train/clear"],
    )
    parser.add_argument(
        "--lmdb",
        nargs=2,
        metavar=("LQ", "GT"),
        default=[f"{DEMO_ROOT}/train_hazy.lmdb", f"{DEMO_ROOT}/train_clear.lmdb"],
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gt-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    print(
        f"batch {args.batch_size}, crop {args.gt_size}, {args.samples} samples per setting, "
        f"median of {args.repeats}\n"
    )
    print("| workers | disk (img/s) | lmdb (img/s) |")
    print("|---:|---:|---:|")
    for workers in args.workers:
        rates = [
            images_per_second(*roots, backend, workers, args.batch_size, args.gt_size, args.samples)
            for backend, roots in (("disk", args.disk), ("lmdb", args.lmdb))
        ]
        print(f"| {workers} | {rates[0]:.0f} | {rates[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
