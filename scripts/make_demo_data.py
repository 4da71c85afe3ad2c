"""Build the small synthetic dehazing set used by the demo (no download needed).

Clear images are random crops (rescaled to SIZE x SIZE) of natural photos bundled with
scikit-image; hazy twins follow the atmospheric scattering model

    I = J t + A (1 - t),   t = exp(-beta d),   A ~ U[0.7, 1],   beta ~ U[0.6, 1.8],

with a smooth synthetic depth d in [0.2, 1.2] (a linear ramp in a random direction plus
low-frequency noise). Validation crops come from the right-hand quarter of every photo and
training crops from the rest, so the two splits share no source pixels. Output:

    OUT/{train,val}/{hazy,clear}/<photo>_<nnn>.png   (same names in hazy/ and clear/)
    OUT/{train,val}_{hazy,clear}.lmdb                (LMDB twins, BasicSR format)
    OUT/demo_info.json                               (settings; marks a complete build)

The result depends only on the settings (same seed, same images). An existing complete build
with the same settings is kept (use --force to rebuild); a demo build with other settings, or
an incomplete one, is rebuilt. A folder that is not a demo build is replaced only with --force.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

FORMAT_VERSION = 1
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")
VAL_FRACTION = 0.25  # right-hand part of each photo reserved for validation
SPLITS = ("train", "val")
INFO_NAME = "demo_info.json"


def load_sources() -> dict[str, np.ndarray]:
    """The bundled scikit-image photos as RGB uint8 arrays (read locally, never downloaded)."""
    try:
        from skimage import data
    except ImportError:
        raise SystemExit(
            "make_demo_data needs scikit-image: pip install 'diffsr[demo]' (or scikit-image)."
        ) from None
    loaders = {
        "astronaut": data.astronaut,
        "coffee": data.coffee,
        "chelsea": data.chelsea,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }
    return {name: np.ascontiguousarray(loaders[name]()[:, :, :3]) for name in SOURCES}


def split_region(img: np.ndarray, split: str, size: int) -> np.ndarray:
    """Training part (left) or validation part (right strip) of a photo; they do not overlap."""
    width = img.shape[1]
    val_width = max(round(VAL_FRACTION * width), min(size, width // 2))
    return img[:, width - val_width :] if split == "val" else img[:, : width - val_width]


def random_rescaled_crop(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square window of side in [size, 2 size] (capped by the region), resized to size."""
    h, w = region.shape[:2]
    largest = min(h, w)
    side = int(rng.integers(min(size, largest), min(2 * size, largest) + 1))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    window = region[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(window, (size, size), interpolation=interpolation)


def synthetic_depth(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth depth map in [0.2, 1.2]: a ramp in a random direction plus low-frequency noise."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-8)
    noise = cv2.resize(rng.standard_normal((4, 4)), (size, size), interpolation=cv2.INTER_CUBIC)
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-8)
    return 0.2 + np.clip(0.7 * ramp + 0.3 * noise, 0.0, 1.0)


def add_haze(clear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hazy version of an RGB uint8 image (atmospheric scattering model), RGB uint8."""
    size = clear.shape[0]
    airlight = rng.uniform(0.7, 1.0)
    beta = rng.uniform(0.6, 1.8)
    transmission = np.exp(-beta * synthetic_depth(size, rng))[:, :, None]
    hazy = clear / 255.0 * transmission + airlight * (1.0 - transmission)
    return np.clip(np.round(hazy * 255.0), 0, 255).astype(np.uint8)


def write_split(
    out: Path, split: str, count: int, size: int, seed: int, sources: dict[str, np.ndarray]
) -> None:
    """Write ``count`` clear/hazy pairs of one split, cycling through the source photos."""
    from diffsr.utils.img_util import imwrite  # imports torch: only when building

    for index in range(count):
        name = SOURCES[index % len(SOURCES)]
        rng = np.random.default_rng((seed, SPLITS.index(split), index))
        clear = random_rescaled_crop(split_region(sources[name], split, size), size, rng)
        hazy = add_haze(clear, rng)
        file_name = f"{name}_{index // len(SOURCES):03d}.png"
        imwrite(clear[:, :, ::-1], out / split / "clear" / file_name, atomic=False)
        imwrite(hazy[:, :, ::-1], out / split / "hazy" / file_name, atomic=False)


def is_complete(out: Path, settings: dict[str, int]) -> bool:
    """Whether ``out`` holds a finished build with these settings."""
    info_path = out / INFO_NAME
    if not info_path.is_file():
        return False
    if json.loads(info_path.read_text(encoding="utf-8")) != settings:
        return False
    for split in SPLITS:
        expected = settings[f"num_{split}"]
        for kind in ("hazy", "clear"):
            if len(list((out / split / kind).glob("*.png"))) != expected:
                return False
            if not (out / f"{split}_{kind}.lmdb" / "meta_info.txt").is_file():
                return False
    return True


def build(out: Path, settings: dict[str, int]) -> None:
    """Build everything in a temporary sibling folder, then move it to ``out``."""
    from diffsr.data.lmdb_convert import paired_folders_to_lmdb  # imports torch: only here

    sources = load_sources()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split in SPLITS:
            count = settings[f"num_{split}"]
            write_split(tmp, split, count, settings["size"], settings["seed"], sources)
            paired_folders_to_lmdb(
                tmp / split / "hazy",
                tmp / split / "clear",
                tmp / f"{split}_hazy.lmdb",
                tmp / f"{split}_clear.lmdb",
                n_thread=2,
                progress=False,
            )
        (tmp / INFO_NAME).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="datasets/demo_haze", help="output folder")
    parser.add_argument("--num-train", type=int, default=100, help="training pairs (default 100)")
    parser.add_argument("--num-val", type=int, default=10, help="validation pairs (default 10)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1 or args.size < 8 or args.seed < 0:
        parser.error("need --num-train >= 1, --num-val >= 1, --size >= 8 and --seed >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    settings = {
        "format_version": FORMAT_VERSION,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "size": args.size,
        "seed": args.seed,
    }
    if not args.force and is_complete(out, settings):
        print(f"{out}: the demo data set is already complete; nothing to do (--force rebuilds).")
        return 0
    is_demo_build = (out / INFO_NAME).is_file()
    if out.exists() and any(out.iterdir()) and not (is_demo_build or args.force):
        print(
            f"{out}: exists and is not a demo build; pass --force to replace it, or choose "
            f"another --out.",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(level=logging.WARNING)
    build(out, settings)
    print(
        f"{out}: wrote {args.num_train} train and {args.num_val} val hazy/clear pairs "
        f"({args.size}x{args.size}) and their LMDBs."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
