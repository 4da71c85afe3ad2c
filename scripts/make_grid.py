"""Side-by-side comparison figure: full images with a boxed region, its zoom below each.

Examples:
    # Dense-Haze 51 and 52: input / without / with DiffLoss / ground truth
    python scripts/make_grid.py \\
        --column Input datasets/Dense-Haze/hazy \\
        --column "w/o DiffLoss" results/fsdgn_l1/visualization/DenseHaze_test \\
        --column "w/ DiffLoss" results/fsdgn_diffloss/visualization/DenseHaze_test \\
        --column GT datasets/Dense-Haze/GT \\
        --image 51 --image 52 --box 700,400,160,120 --box 300,500,160,120 \\
        --zoom 3 --display-width 480 --out denshaze_grid.png
    # names that do not share a prefix: a pattern with {} for the image name
    python scripts/make_grid.py --column Input 'Rain100H/rain-{}.png' \\
        --column GT 'Rain100H/norain-{}.png' --image 12 --box 40,40,64,64 --out rain12.png

Every --column is LABEL PATH. PATH is a folder, searched for the image whose name (without
extension) is the --image NAME or starts with NAME followed by _ - or . (so 51 finds
51_hazy.png and 51_GT.png); a pattern containing {} (replaced by NAME); or one image file. Each
--image gives one row; without --image every PATH must be a file (one row). --box is given once
for all rows or once per row. Labels are drawn above the first row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from diffsr.utils.visualize import comparison_grid, stack_rows

NAME_SEPARATORS = ("_", "-", ".")


class GridError(Exception):
    """A problem with the inputs, reported as one line."""


def resolve_image(spec: str, name: str | None) -> Path:
    """The image file a column's PATH gives for the image ``name`` (see the module help)."""
    if "{}" in spec:
        if name is None:
            raise GridError(f"column path {spec!r} has {{}} but no --image names were given.")
        path = Path(spec.replace("{}", name))
        if not path.is_file():
            raise GridError(f"{path}: not found (from pattern {spec!r}, image {name!r}).")
        return path
    path = Path(spec)
    if path.is_file():
        return path
    if not path.is_dir():
        raise GridError(f"{path}: no such image file or folder.")
    if name is None:
        raise GridError(f"{path}: is a folder; say which image with --image NAME.")
    # Imported here: diffsr.data loads torch, which only a folder search needs to pay for.
    from diffsr.data.file_client import IMAGE_EXTENSIONS

    files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    exact = [p for p in files if p.stem == name]
    if len(exact) == 1:
        return exact[0]
    prefixed = [p for p in files if any(p.stem.startswith(name + s) for s in NAME_SEPARATORS)]
    candidates = exact or prefixed
    if len(candidates) != 1:
        found = ", ".join(sorted(p.name for p in candidates)) or "none"
        raise GridError(
            f"{path}: {len(candidates)} images match {name!r} (found: {found}); use a pattern "
            f"with {{}} or an exact name."
        )
    return candidates[0]


def read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise GridError(f"{path}: OpenCV cannot read this image.")
    return img


def parse_ints(text: str, count: int, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(
            f"{what} {text!r}: expected {count} integers, comma-separated."
        )
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--column",
        nargs=2,
        action="append",
        required=True,
        metavar=("LABEL", "PATH"),
        help="a column: its label and image source",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=None,
        metavar="NAME",
        help="an image name; one row each (repeatable)",
    )
    parser.add_argument(
        "--box",
        action="append",
        default=None,
        metavar="X,Y,W,H",
        type=lambda text: parse_ints(text, 4, "box"),
        help="zoomed region in full-size pixels: once, or once per --image",
    )
    parser.add_argument("--zoom", type=float, default=3.0, help="zoom factor (default: 3)")
    parser.add_argument(
        "--display-width",
        type=int,
        default=None,
        metavar="PIXELS",
        help="shrink full images to at most this width (the zoom keeps full resolution)",
    )
    parser.add_argument("--gap", type=int, default=4, help="pixels between panels (default: 4)")
    parser.add_argument(
        "--label-height",
        type=int,
        default=None,
        metavar="PIXELS",
        help="height of the label strip (default: 8%% of the column width)",
    )
    parser.add_argument(
        "--color",
        default="255,0,0",
        metavar="R,G,B",
        type=lambda text: parse_ints(text, 3, "color"),
        help="box colour (default: 255,0,0, red)",
    )
    parser.add_argument("--no-labels", action="store_true", help="draw no column labels")
    parser.add_argument(
        "--out", type=Path, default=Path("grid.png"), help="output image (default: grid.png)"
    )
    args = parser.parse_args(argv)
    rows = len(args.image) if args.image else 1
    if args.box is not None and len(args.box) not in (1, rows):
        parser.error(
            f"--box is given {len(args.box)} times for {rows} rows; give it once or once per row."
        )
    if args.zoom <= 0:
        parser.error(f"--zoom must be positive, got {args.zoom}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labels = [label for label, _ in args.column]
    names = args.image or [None]
    color_bgr = tuple(reversed(args.color))
    rows = []
    try:
        for index, name in enumerate(names):
            paths = [resolve_image(spec, name) for _, spec in args.column]
            images = [read_image(path) for path in paths]
            box = None if args.box is None else args.box[index if len(args.box) > 1 else 0]
            try:
                row = comparison_grid(
                    images,
                    labels=None if args.no_labels or index else labels,
                    box=box,
                    zoom=args.zoom,
                    color=color_bgr,
                    gap=args.gap,
                    label_height=args.label_height,
                    display_width=args.display_width,
                )
            except ValueError as err:
                raise GridError(f"row {name or 1} ({', '.join(map(str, paths))}): {err}") from None
            rows.append(row)
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    grid = stack_rows(rows, gap=args.gap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), grid):
        print(
            f"error: {args.out}: OpenCV could not write the image (unknown extension?).",
            file=sys.stderr,
        )
        return 2
    print(f"Wrote {args.out} ({grid.shape[1]} x {grid.shape[0]}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
