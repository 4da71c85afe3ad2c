"""CUB-200-2011 bird images with their class labels, for fine-grained classification.

Layout as distributed (and as written by ``scripts/degrade_dataset.py`` for degraded copies)::

    <root>/images/<class folder>/<name>.jpg
    <root>/images.txt               "<image id> <class folder>/<name>.jpg"
    <root>/image_class_labels.txt   "<image id> <class id, 1-based>"
    <root>/train_test_split.txt     "<image id> <1 = train, 0 = test>"
    <root>/classes.txt              "<class id> <class folder>"

Labels returned are 0-based (class id - 1). When a listed image is missing but a file with the
same name and another image extension exists (a copy degraded with ``--format png``), that file
is read instead.

The classification views follow the usual ImageNet recipe, written with OpenCV: training takes
a random resized crop (area 8-100 %, aspect 3/4-4/3) scaled to ``image_size`` plus a random
horizontal flip; testing resizes the shorter side to ``resize_size`` (default ``image_size *
256 / 224``) and takes the central ``image_size`` square. ``image_size: null`` returns whole
images (for restoring them first, see ``scripts/eval_classification.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from diffsr.data.dataset_options import (
    DatasetOptions,
    check_bool,
    check_int,
    parse_dataset_options,
)
from diffsr.data.file_client import IMAGE_EXTENSIONS
from diffsr.utils.img_util import img2tensor, imread
from diffsr.utils.registry import DATASET_REGISTRY

__all__ = [
    "CUBDataset",
    "CUBMetadata",
    "CUBOptions",
    "center_crop",
    "eval_view",
    "random_resized_crop",
    "read_cub_metadata",
    "resize_image",
    "resize_shorter_side",
]

logger = logging.getLogger("diffsr")

SPLITS = ("train", "test", "all")
METADATA_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
TEST_RESIZE_RATIO = 256 / 224  # resize 256, crop 224 (ImageNet evaluation)


# ----------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class CUBMetadata:
    """The parsed metadata files: per image its relative path, 0-based label and split."""

    root: Path
    paths: list[str]
    labels: list[int]
    is_train: list[bool]
    class_names: list[str]

    def indices(self, split: str) -> list[int]:
        """Positions of the images of ``split`` (train, test or all), in images.txt order."""
        if split == "all":
            return list(range(len(self.paths)))
        return [i for i, train in enumerate(self.is_train) if train == (split == "train")]


def _read_pairs(path: Path, numeric: bool = False) -> list[tuple[int, str]]:
    """Lines ``<int> <value>`` of a metadata file (``numeric``: the value is an int too),
    naming the file and line on errors."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        head, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if not head.isdigit() or not rest or (numeric and not rest.isdigit()):
            expected = "<number> <number>" if numeric else "<number> <value>"
            raise ValueError(f"{path}, line {number}: expected '{expected}', got {line!r}.")
        pairs.append((int(head), rest))
    return pairs


def read_cub_metadata(root: str | Path) -> CUBMetadata:
    """Parse the four CUB metadata files under ``root`` (see the module docstring)."""
    root = Path(root)
    missing = [name for name in METADATA_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root}: not a CUB-200-2011 root; missing {', '.join(missing)}. Point to the folder "
            f"holding images/ and the metadata files (e.g. datasets/CUB_200_2011)."
        )
    images = _read_pairs(root / "images.txt")
    labels = {k: int(v) for k, v in _read_pairs(root / "image_class_labels.txt", numeric=True)}
    splits = {k: int(v) for k, v in _read_pairs(root / "train_test_split.txt", numeric=True)}
    classes = _read_pairs(root / "classes.txt")
    if [class_id for class_id, _ in classes] != list(range(1, len(classes) + 1)):
        raise ValueError(f"{root / 'classes.txt'}: class ids must be 1, 2, ... in order.")
    paths, label_list, train_list = [], [], []
    for image_id, relative in images:
        for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", splits)):
            if image_id not in table:
                raise ValueError(f"{root / name}: no line for image {image_id} ({relative}).")
        if not 1 <= labels[image_id] <= len(classes):
            raise ValueError(
                f"{root / 'image_class_labels.txt'}: image {image_id} has class "
                f"{labels[image_id]}, outside 1..{len(classes)} of classes.txt."
            )
        if splits[image_id] not in (0, 1):
            raise ValueError(
                f"{root / 'train_test_split.txt'}: image {image_id} has {splits[image_id]}; "
                f"expected 1 (train) or 0 (test)."
            )
        paths.append(relative)
        label_list.append(labels[image_id] - 1)
        train_list.append(splits[image_id] == 1)
    return CUBMetadata(root, paths, label_list, train_list, [name for _, name in classes])


# ----------------------------------------------------------------------------- views
def resize_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with area averaging when shrinking and bilinear interpolation when enlarging."""
    shrinking = width * height < img.shape[0] * img.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interpolation)


def resize_shorter_side(img: np.ndarray, size: int) -> np.ndarray:
    """Scale so that the shorter side is ``size`` pixels, keeping the aspect ratio."""
    height, width = img.shape[:2]
    scale = size / min(height, width)
    return resize_image(img, max(1, round(width * scale)), max(1, round(height * scale)))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` square (the image must be at least that large)."""
    height, width = img.shape[:2]
    if height < size or width < size:
        raise ValueError(f"center_crop: image {height}x{width} is smaller than {size}x{size}.")
    top, left = (height - size) // 2, (width - size) // 2
    return img[top : top + size, left : left + size]


def eval_view(img: np.ndarray, image_size: int, resize_size: int | None = None) -> np.ndarray:
    """Evaluation view: shorter side to ``resize_size``, then the central ``image_size`` crop."""
    resize_size = resize_size or round(image_size * TEST_RESIZE_RATIO)
    return center_crop(resize_shorter_side(img, resize_size), image_size)


def random_resized_crop(
    img: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """A crop of random area (fraction ``scale`` of the image) and aspect ratio (``ratio``,
    drawn log-uniformly), resized to ``size`` x ``size``.

    Up to 10 draws; if none fits inside the image, the central crop with the aspect ratio
    clamped to ``ratio`` is used (as in the Inception / ImageNet training recipe).
    """
    height, width = img.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            break
    else:
        aspect = width / height
        if aspect < ratio[0]:
            crop_w, crop_h = width, round(width / ratio[0])
        elif aspect > ratio[1]:
            crop_w, crop_h = round(height * ratio[1]), height
        else:
            crop_w, crop_h = width, height
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return resize_image(img[top : top + crop_h, left : left + crop_w], size, size)


# ----------------------------------------------------------------------------- dataset
@dataclass(kw_only=True)
class CUBOptions(DatasetOptions):
    """Keys read by :class:`CUBDataset` (see docs/evaluation.md)."""

    dataroot: str
    split: str = "test"
    image_size: int | None = 224
    resize_size: int | None = None
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    use_hflip: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split not in SPLITS:
            raise ValueError(f"option 'split' must be one of {SPLITS}, got {self.split!r}.")
        check_int("image_size", self.image_size, allow_none=True)
        check_int("resize_size", self.resize_size, allow_none=True)
        check_bool("use_hflip", self.use_hflip)
        sizes = (self.resize_size, self.image_size)
        if None not in sizes and self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size {self.resize_size} must be >= image_size {self.image_size}."
            )
        for key, bounds in (("crop_scale", self.crop_scale), ("crop_ratio", self.crop_ratio)):
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"option {key!r} must be [low, high] with 0 < low <= high.")


@DATASET_REGISTRY.register()
class CUBDataset(Dataset):
    """CUB-200-2011 images of one split with 0-based class labels.

    ``dataset[v]`` returns ``{'img': 3 x S x S float32 RGB in [0, 1], 'label': int,
    'img_path': str}`` with ``S = image_size`` (whole images, 3 x H x W, when ``image_size`` is
    null). Train phase: random resized crop and flip from ``numpy.random.default_rng((seed,
    v))``; val/test: the deterministic :func:`eval_view`.
    """

    options_cls = CUBOptions

    def __init__(self, opt: Mapping[str, Any], seed: int = 0) -> None:
        self.opt = parse_dataset_options(opt, self.options_cls)
        self.seed = seed
        self.metadata = read_cub_metadata(self.opt.dataroot)
        self.indices = self.metadata.indices(self.opt.split)
        if not self.indices:
            raise ValueError(f"{self.opt.dataroot}: the {self.opt.split!r} split has no images.")
        logger.info(
            "Dataset %r (%s): %d %s images of %d classes from %s.",
            self.opt.name,
            self.opt.phase,
            len(self.indices),
            self.opt.split,
            self.num_classes,
            self.opt.dataroot,
        )

    @property
    def num_classes(self) -> int:
        return len(self.metadata.class_names)

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    @property
    def labels(self) -> list[int]:
        """Labels of the images of this split, in order."""
        return [self.metadata.labels[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def image_path(self, position: int) -> Path:
        """File of the ``position``-th image (a same-name file with another image extension
        when the listed one is missing)."""
        listed = self.metadata.root / "images" / self.metadata.paths[self.indices[position]]
        if listed.is_file():
            return listed
        for extension in sorted(IMAGE_EXTENSIONS):
            candidate = listed.with_suffix(extension)
            if candidate.is_file():
                return candidate
        return listed  # imread names it in its error

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | str]:
        o = self.opt
        position = index % len(self.indices)
        path = self.image_path(position)
        img = imread(path)
        if o.image_size is not None:
            if o.is_train:
                rng = np.random.default_rng((self.seed, index))
                img = random_resized_crop(img, o.image_size, rng, o.crop_scale, o.crop_ratio)
                if o.use_hflip and rng.random() < 0.5:
                    img = img[:, ::-1]
            else:
                img = eval_view(img, o.image_size, o.resize_size)
        return {
            "img": img2tensor(np.ascontiguousarray(img), bgr2rgb=True, float32=True),
            "label": self.metadata.labels[self.indices[position]],
            "img_path": str(path),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.opt.name!r}, split={self.opt.split!r}, "
            f"images={len(self)}, classes={self.num_classes})"
        )
