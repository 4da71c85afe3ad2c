"""Make a synthetically degraded copy of an image data set (fog, haze, rain or low light).

Examples:
    # CUB-200-2011 under fog of severity 3 (images/<class>/*.jpg degraded, metadata copied)
    python scripts/degrade_dataset.py datasets/CUB_200_2011 --kind fog --severity 3 \\
        --out datasets/CUB_200_2011_fog3
    # any folder of images, as PNG, with 2 worker processes
    python scripts/degrade_dataset.py photos --kind lowlight --severity 5 --format png \\
        --workers 2 --out photos_lowlight5

The folder tree is kept: every image (by extension) is degraded and written to the same
relative path under --out; every other file (CUB's images.txt, classes.txt,
image_class_labels.txt, train_test_split.txt, ...) is copied unless --no-copy-other. Hidden
files and folders are skipped. Each image's random generator is seeded from (--seed, its
relative path), so results do not depend on the order, the number of workers or on which
other images are processed. --out/degradation.json records the settings; running again with
the same settings resumes (existing images are kept), with different ones it stops unless
--overwrite. Images are written as 8-bit, 3-channel files (grayscale becomes 3 equal
channels).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from diffsr.utils.degradations import DEGRADATIONS, degrade

SETTINGS_FILE = "degradation.json"
FORMAT_VERSION = 1
CUB_METADATA = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt")


@dataclass(frozen=True)
class Settings:
    """Everything the degraded images depend on (written to degradation.json)."""

    kind: str
    severity: int
    seed: int
    format: str
    jpeg_quality: int
    version: int = FORMAT_VERSION


def image_seed(seed: int, relative_path: str) -> list[int]:
    """Seed entropy of one image: the global seed and 64 bits of SHA-256 of its path."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def output_name(relative_path: str, image_format: str) -> str:
    return relative_path if image_format == "same" else str(Path(relative_path).with_suffix(".png"))


def degrade_file(job: tuple[Path, Path, str, Settings]) -> str | None:
    """Degrade one image; returns an error text instead of raising (for the summary)."""
    from diffsr.utils.img_util import imread, imwrite

    source, target, relative_path, settings = job
    try:
        img = imread(source)
        rng = np.random.default_rng(image_seed(settings.seed, relative_path))
        out = degrade(img, settings.kind, rng, settings.severity)
        is_jpeg = target.suffix.lower() in (".jpg", ".jpeg")
        params = [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality] if is_jpeg else []
        imwrite((out * 255.0).round().astype(np.uint8), target, params)
    except (OSError, ValueError) as err:
        return f"{source}: {err}"
    return None


def walk(root: Path) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of the image files and of the other files under ``root``."""
    from diffsr.data.file_client import IMAGE_EXTENSIONS

    images, others = [], []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(relative.as_posix())
    return images, others


def claim_output(out: Path, settings: Settings, overwrite: bool) -> None:
    """Create --out and record the settings; refuse to mix two different degradations."""
    record = out / SETTINGS_FILE
    if record.is_file() and not overwrite:
        previous = json.loads(record.read_text(encoding="utf-8"))
        if previous != asdict(settings):
            raise ValueError(
                f"{out} already holds a different degradation ({previous}); choose "
                f"another --out, or pass --overwrite to redo every image."
            )
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="data set root (e.g. CUB_200_2011) or any folder")
    parser.add_argument("--out", type=Path, required=True, help="output root (created)")
    parser.add_argument("--kind", required=True, choices=sorted(DEGRADATIONS))
    parser.add_argument(
        "--severity",
        type=int,
        default=3,
        choices=range(1, 6),
        metavar="1-5",
        help="1 (mild) to 5 (strong) (default: 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="global seed (default: 0)")
    parser.add_argument(
        "--format",
        choices=("same", "png"),
        default="same",
        help="keep each image's extension (default) or write PNG",
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=95, help="quality of JPEG outputs (default: 95)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument(
        "--no-copy-other", action="store_true", help="do not copy non-image files (metadata)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="redo every image even if --out already has it"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.jpeg_quality <= 100:
        parser.error(f"--jpeg-quality must be 0-100, got {args.jpeg_quality}.")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source, out = args.source.resolve(), args.out.resolve()
    if not source.is_dir():
        print(f"error: {args.source}: no such folder.", file=sys.stderr)
        return 2
    if out == source or source in out.parents:
        print(
            f"error: --out {args.out} lies inside the source folder; choose another.",
            file=sys.stderr,
        )
        return 2
    images, others = walk(source)
    if not images:
        print(
            f"error: {args.source}: no image files found (searched recursively).", file=sys.stderr
        )
        return 2
    if all((source / name).is_file() for name in CUB_METADATA):
        print("CUB-200-2011 layout: images are degraded, metadata files copied.")
        if args.format == "png":
            print("warning: --format png renames the images, so images.txt no longer matches.")

    settings = Settings(args.kind, args.severity, args.seed, args.format, args.jpeg_quality)
    try:
        claim_output(out, settings, args.overwrite)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.no_copy_other:
        for name in others:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, out / name)

    jobs = []
    for name in images:
        target = out / output_name(name, args.format)
        if args.overwrite or not target.is_file():
            jobs.append((source / name, target, name, settings))
    skipped = len(images) - len(jobs)
    parallel = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    with parallel or contextlib.nullcontext():
        results = (
            parallel.map(degrade_file, jobs, chunksize=8) if parallel else map(degrade_file, jobs)
        )
        progress = tqdm(results, total=len(jobs), desc=f"{args.kind} {args.severity}", unit="img")
        failures = [error for error in progress if error]
    print(
        f"{len(jobs) - len(failures)} images degraded, {skipped} kept from an earlier run, "
        f"{0 if args.no_copy_other else len(others)} other files copied -> {args.out}."
    )
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
