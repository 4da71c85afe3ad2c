"""Top-1 accuracy of CUB classifiers on degraded and restored test images (Table 2).

Examples:
    # low light: degraded, restored without and with DiffLoss, by two fine-tuned classifiers
    python scripts/eval_classification.py --data datasets/CUB_200_2011_lowlight3 \\
        --classifier resnet50=experiments/cub_resnet50/classifier.pth \\
        --classifier vgg16=experiments/cub_vgg16/classifier.pth \\
        --opt options/train/iat_lowlight.yml \\
        --ckpt without=experiments/iat_l1/models/net_g_latest.pth \\
        --ckpt with=experiments/iat_diffloss/models/net_g_latest.pth \\
        --clean datasets/CUB_200_2011 --out results/cub_lowlight3
    # degraded images only (no restoration), one classifier
    python scripts/eval_classification.py --data datasets/CUB_200_2011_fog3 \\
        --classifier experiments/cub_resnet50/classifier.pth --out results/cub_fog3

--data is a CUB-200-2011 root degraded by scripts/degrade_dataset.py (same layout); only its
test split (train_test_split.txt) is used. Each test image is classified as it is
("degraded"), and after restoration by each --ckpt network (built from --opt or --arch, as in
scripts/batch_test.py; --tile for large images). Restored images are clamped to [0, 1] and
rounded to 8 bits, as if saved, before classification. --clean adds the accuracy on the
original images. Every classifier sees the view it was trained for: shorter side resized to
its resize_size, central image_size crop (scripts/train_classifier.py records both).

Writes under --out:
    top1.md, top1.csv   top-1 (%) per classifier and source (clean, degraded, each --ckpt);
                        the CSV has degradation,classifier,source,correct,total,top1
    predictions.csv     per test image (class folder/name, no extension): its label (0-based)
                        and every predicted class
    restored/<ckpt>/    with --save-images: the restored images as a CUB root (PNG images,
                        metadata copied), readable again by this script

An image that cannot be read is named on stderr and left out of every count; the exit status
is then 1 (2: bad arguments).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from diffsr.data import build_dataset
from diffsr.data.cub_dataset import METADATA_FILES, CUBDataset, eval_view
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
)
from diffsr.utils.file_util import atomic_write_text, mkdirs
from diffsr.utils.img_util import imwrite, tensor2img
from diffsr.utils.registry import ARCH_REGISTRY, RegistryError

DEGRADED, CLEAN = "degraded", "clean"


@dataclass
class Classifier:
    """A fine-tuned classifier and the view it expects."""

    net: nn.Module
    image_size: int
    resize_size: int
    num_classes: int

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> int:
        """Class of one 1 x 3 x H x W RGB image in [0, 1]."""
        hwc = image[0].permute(1, 2, 0).cpu().numpy()
        view = eval_view(hwc, self.image_size, self.resize_size)
        x = torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1)))[None]
        device = next(self.net.parameters()).device
        return int(self.net(x.to(device)).argmax(1).item())


def load_classifier(path: Path, device: torch.device) -> tuple[str, Classifier]:
    """Rebuild a classifier written by scripts/train_classifier.py; returns (arch type, it)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        block = dict(state["arch"])
        net = ARCH_REGISTRY.build(block)
        net.load_state_dict(state["params"])
    except (OSError, KeyError, RuntimeError, RegistryError, ValueError) as err:
        raise UsageError(
            f"--classifier {path}: not a classifier written by scripts/train_classifier.py "
            f"(its classifier.pth or last.pth): {err}"
        ) from None
    classifier = Classifier(
        net.to(device).eval(), state["image_size"], state["resize_size"], block["num_classes"]
    )
    return block["type"], classifier


def load_classifiers(items: list[str], device: torch.device) -> dict[str, Classifier]:
    """``NAME=PATH`` or ``PATH`` (named by its arch type) items."""
    classifiers: dict[str, Classifier] = {}
    for item in items:
        name, sep, path = item.partition("=")
        path = Path(path if sep else item)
        if not path.is_file():
            raise UsageError(f"--classifier {item}: no such file.")
        arch_type, classifier = load_classifier(path, device)
        name = name.strip() if sep else arch_type
        if name in classifiers:
            raise UsageError(f"--classifier: the name {name!r} is used twice; write NAME=PATH.")
        classifiers[name] = classifier
    return classifiers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="degraded CUB root")
    parser.add_argument("--clean", type=Path, help="original CUB root (adds a 'clean' column)")
    parser.add_argument(
        "--classifier",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="classifier.pth of train_classifier.py (repeat for several)",
    )
    parser.add_argument(
        "--label", help="degradation name in the tables (default: from degradation.json)"
    )
    add_network_arguments(parser, require_ckpt=False)
    add_tile_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--save-images", action="store_true", help="keep the restored images")
    return parser.parse_args(argv)


def degradation_label(root: Path) -> str:
    """``fog, severity 3`` from degrade_dataset.py's record, else the folder name."""
    record = root / "degradation.json"
    if record.is_file():
        try:
            settings = json.loads(record.read_text(encoding="utf-8"))
            return f"{settings['kind']}, severity {settings['severity']}"
        except (ValueError, KeyError):
            pass
    return root.name


@dataclass
class Tally:
    """Correct predictions per (classifier, source), images per source, predictions per image."""

    correct: dict[tuple[str, str], int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def classify(
        self,
        classifiers: dict[str, Classifier],
        source: str,
        image: str,
        label: int,
        pixels: torch.Tensor,
    ) -> None:
        """Count one image of ``source`` and record every classifier's prediction for it."""
        self.total[source] = self.total.get(source, 0) + 1
        row = self.predictions.setdefault(image, {"label": label})
        for name, classifier in classifiers.items():
            predicted = classifier.predict(pixels)
            key = (name, source)
            self.correct[key] = self.correct.get(key, 0) + int(predicted == label)
            row[f"{name}/{source}"] = predicted

    def top1(self, classifier: str, source: str) -> float:
        return 100.0 * self.correct.get((classifier, source), 0) / max(self.total.get(source, 0), 1)


def cub_test_split(root: Path, name: str) -> tuple[CUBDataset, DataLoader]:
    """The test split of a CUB root as whole images, tolerant to unreadable files."""
    try:
        dataset = build_dataset(
            {
                "type": "CUBDataset",
                "name": name,
                "phase": "test",
                "split": "test",
                "dataroot": str(root),
                "image_size": None,
            }
        )
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    return dataset, DataLoader(SkipUnreadable(dataset), batch_size=1)


def image_id(path: str, root: Path) -> str:
    """``<class folder>/<name>`` without extension: the same for a JPEG and its PNG copy."""
    return Path(path).relative_to(root / "images").with_suffix("").as_posix()


def tables(tally: Tally, classifiers: list[str], sources: list[str], label: str) -> tuple[str, str]:
    """Markdown (Table 2 layout) and CSV texts of the top-1 accuracies."""
    lines = [
        f"Top-1 (%) on the CUB-200-2011 test split, {label}; images: "
        + ", ".join(f"{s} {tally.total.get(s, 0)}" for s in sources),
        "",
        "| classifier | " + " | ".join(sources) + " |",
        "|---" * (len(sources) + 1) + "|",
    ]
    for classifier in classifiers:
        cells = [f"{tally.top1(classifier, s):.2f}" for s in sources]
        lines.append(f"| {classifier} | " + " | ".join(cells) + " |")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["degradation", "classifier", "source", "correct", "total", "top1"])
    for classifier in classifiers:
        for source in sources:
            writer.writerow(
                [
                    label,
                    classifier,
                    source,
                    tally.correct.get((classifier, source), 0),
                    tally.total.get(source, 0),
                    f"{tally.top1(classifier, source):.6f}",
                ]
            )
    return "\n".join(lines) + "\n", buffer.getvalue()


def predictions_csv(tally: Tally, classifiers: list[str], sources: list[str]) -> str:
    columns = [f"{c}/{s}" for c in classifiers for s in sources]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "label", *columns])
    for image, row in tally.predictions.items():
        writer.writerow([image, row["label"], *(row.get(c, "") for c in columns)])
    return buffer.getvalue()


def copy_metadata(source_root: Path, target_root: Path) -> None:
    mkdirs(target_root)
    for name in METADATA_FILES:
        shutil.copy2(source_root / name, target_root / name)


def run(args: argparse.Namespace) -> int:
    tile = tile_options_from_args(args)
    device = device_from_args(args)
    classifiers = load_classifiers(args.classifier, device)
    restorers = build_named_networks(args, device)
    dataset, loader = cub_test_split(args.data, "degraded CUB test")
    for name, classifier in classifiers.items():
        if classifier.num_classes != dataset.num_classes:
            raise UsageError(
                f"--classifier {name} has {classifier.num_classes} classes but {args.data} has "
                f"{dataset.num_classes}."
            )
    label = args.label or degradation_label(args.data)
    sources = ([CLEAN] if args.clean else []) + [DEGRADED, *restorers]
    tally, failures = Tally(), []
    if args.save_images:
        for name in restorers:
            copy_metadata(args.data, args.out / "restored" / name)

    if args.clean:
        _, clean_loader = cub_test_split(args.clean, "clean CUB test")
        bar = tqdm(clean_loader, desc="clean", unit="img")
        for sample in readable_samples(bar, failures):
            image = image_id(sample["img_path"][0], args.clean)
            tally.classify(classifiers, CLEAN, image, int(sample["label"]), sample["img"])

    bar = tqdm(loader, desc=f"{label} x {len(restorers)} ckpt", unit="img")
    for sample in readable_samples(bar, failures):
        image = image_id(sample["img_path"][0], args.data)
        truth = int(sample["label"])
        degraded = sample["img"].to(device)
        tally.classify(classifiers, DEGRADED, image, truth, degraded)
        for source, net in restorers.items():
            restored = torch.round(restore(net, degraded, tile).clamp(0, 1) * 255) / 255
            if args.save_images:
                target = args.out / "restored" / source / "images" / f"{image}.png"
                imwrite(tensor2img(restored), target)
            tally.classify(classifiers, source, image, truth, restored)

    names = list(classifiers)
    markdown, csv_text = tables(tally, names, sources, label)
    mkdirs(args.out)
    atomic_write_text(args.out / "top1.md", markdown)
    atomic_write_text(args.out / "top1.csv", csv_text)
    atomic_write_text(args.out / "predictions.csv", predictions_csv(tally, names, sources))
    print("\n" + markdown)
    print(f"Results in {args.out}")
    return report_failures(failures)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
