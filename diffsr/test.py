"""Test a trained model: ``python diffsr/test.py -opt options/test/<file>.yml``.

Every ``datasets.test_*`` (or ``val*``) block is restored with ``network_g`` loaded from
``path.pretrain_network_g``; restored images go to ``results/<name>/visualization/<set>/`` and
per-image plus mean metrics to ``results/<name>/<set>_metrics.{csv,md}``.
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
from typing import Any

import torch
from tqdm import tqdm

from diffsr.data import build_dataloader, build_dataset
from diffsr.metrics.metric_set import MetricSet
from diffsr.models import build_model
from diffsr.utils.file_util import atomic_write_text, mkdirs
from diffsr.utils.img_util import imwrite, tensor2img
from diffsr.utils.logger import get_root_logger
from diffsr.utils.misc import get_time_str
from diffsr.utils.options import OptionError, parse_options

__all__ = ["main", "test_dataset"]

logger = logging.getLogger("diffsr")


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


@torch.no_grad()
def test_dataset(model: Any, loader: Any, opt: dict[str, Any]) -> dict[str, float]:
    """Restore one test set; write images and metric tables; returns the mean metrics."""
    name = loader.dataset.opt.name or "test"
    out_dir = Path(opt["path"]["visualization"]) / name
    mkdirs(out_dir)
    metrics = MetricSet((opt.get("val") or {}).get("metrics"))
    rows: list[dict[str, Any]] = []
    for data in tqdm(loader, desc=f"test {name}", unit="img"):
        model.feed_data(data)
        restored = tensor2img(model.test())
        stem = Path(data["lq_path"][0]).stem
        suffix = f"_{opt['val']['suffix']}" if opt["val"].get("suffix") else ""
        imwrite(restored, out_dir / f"{stem}{suffix}.png")
        if model.gt is not None and metrics.names:
            rows.append({"image": stem, **metrics.update(restored, tensor2img(model.gt))})
    if not rows:
        logger.info(
            "Test set %s: %d images restored to %s (no metrics).", name, len(loader), out_dir
        )
        return {}
    names = list(metrics.per_image)
    means = metrics.compute()
    csv_text, md_text = metrics_tables(rows, names, means)
    root = Path(opt["path"]["results_root"])
    atomic_write_text(root / f"{name}_metrics.csv", csv_text)
    atomic_write_text(root / f"{name}_metrics.md", md_text)
    logger.info("Test set %s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-opt", "--opt", required=True, help="path to the test option YAML file")
    parser.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        opt = parse_options(args.opt, is_train=False, overrides=args.set)
    except (OptionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = Path(opt["path"]["results_root"])
    mkdirs(root)
    get_root_logger(root / f"test_{opt['name']}_{get_time_str()}.log")
    model = build_model(opt)
    for dataset_opt in opt["datasets"].values():
        dataset = build_dataset(dataset_opt, seed=opt["manual_seed"])
        loader = build_dataloader(
            dataset, dataset_opt, dataset_opt["phase"], seed=opt["manual_seed"]
        )
        test_dataset(model, loader, opt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
