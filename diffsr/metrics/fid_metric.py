"""Fréchet Inception Distance (Heusel et al., NeurIPS 2017) between restored and reference sets.

Each image is mapped to the 2048-d pool3 features of an ImageNet Inception-v3; each set's
features are summarised by their mean ``mu`` and covariance ``S``, and

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

Lower is better; 0 for identical sets. FID is a set-level metric: :class:`FID` collects features
image by image (``update``) and computes the distance once (``compute``). It needs many samples
(the reference uses >= 2048 images, one per feature dimension): with a small test set, use the
``crops`` option, which computes it on random crops of every image instead (still biased; only
compare numbers computed with the same settings).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from diffsr.archs.backbone_util import default_device
from diffsr.archs.inception_arch import (
    FEATURE_DIM,
    INCEPTION_WEIGHTS,
    InceptionV3FeatureExtractor,
    Variant,
)
from diffsr.metrics.metric_util import to_hwc_float64
from diffsr.utils.registry import METRIC_REGISTRY

__all__ = ["FID", "feature_statistics", "frechet_distance", "get_inception_network"]

logger = logging.getLogger("diffsr")

# Added to both covariances' diagonals when sqrtm(S1 S2) fails (singular product), as pytorch-fid.
SQRTM_EPS = 1e-6
# Largest imaginary part tolerated on the diagonal of sqrtm(S1 S2) (numerical noise).
IMAGINARY_TOLERANCE = 1e-3
CROP_KEYS = ("size", "per_image")


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D) and unbiased covariance (D x D) of N x D features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"FID needs at least 2 feature vectors per set, got an array of shape "
            f"{features.shape}; add images or use the 'crops' option."
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def matrix_sqrt(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its "matrix is singular" warning.

    Covariances from fewer samples than feature dimensions are always singular; the caller
    checks the result (finite, negligible imaginary part) instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``Tr((S1 S2)^(1/2))`` comes from ``scipy.linalg.sqrtm``. If that fails for a singular product
    (non-finite result), ``SQRTM_EPS * I`` is added to both covariances and it is retried;
    imaginary parts from rounding (at most IMAGINARY_TOLERANCE on the diagonal) are dropped.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if (
        mu1.shape != mu2.shape
        or sigma1.shape != sigma2.shape
        or sigma1.shape != (mu1.size, mu1.size)
    ):
        raise ValueError(
            f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, "
            f"sigma {sigma1.shape} / {sigma2.shape}."
        )
    covmean = matrix_sqrt(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning(
            "FID: sqrtm of the covariance product is not finite (singular covariances, too few "
            "samples); adding %g to the diagonals.",
            SQRTM_EPS,
        )
        offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
        covmean = matrix_sqrt((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(np.diagonal(covmean).imag))
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"FID: sqrtm of the covariance product has imaginary parts up to {largest:.3g} on "
                f"its diagonal; the covariances are too ill-conditioned (use more images or "
                f"crops)."
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@functools.lru_cache(maxsize=4)
def _cached_network(
    weights_path: str, variant: Variant, resize_to: int, device: str
) -> InceptionV3FeatureExtractor:
    extractor = InceptionV3FeatureExtractor(weights_path, variant=variant, resize_to=resize_to)
    return extractor.to(device)


def get_inception_network(
    weights_path: str | None = None,
    variant: Variant = "fid",
    resize_to: int = 299,
    device: str | torch.device | None = None,
) -> InceptionV3FeatureExtractor:
    """The Inception feature extractor for these settings, built once per process and reused."""
    if variant not in INCEPTION_WEIGHTS:
        raise ValueError(f"FID: variant must be 'fid' or 'torchvision', got {variant!r}.")
    path = str(Path(weights_path or INCEPTION_WEIGHTS[variant].default_path).resolve())
    return _cached_network(path, variant, resize_to, str(torch.device(device or default_device())))


def check_crops(crops: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """``{size: S, per_image: N}`` -> (S, N); ``None`` -> None (whole images)."""
    if crops is None:
        return None
    if not isinstance(crops, Mapping) or set(crops) != set(CROP_KEYS):
        raise ValueError(
            f"FID: crops must be null or a mapping with exactly the keys size and per_image "
            f"(e.g. {{size: 64, per_image: 16}}), got {crops!r}."
        )
    for key in CROP_KEYS:
        value = crops[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"FID: crops.{key} must be a positive int, got {value!r}.")
    return crops["size"], crops["per_image"]


@METRIC_REGISTRY.register()
class FID:
    """Set-level FID between restored images and their references.

    ``update(img, img2)`` takes one restored image and its reference as BGR arrays in [0, 255]
    (uint8 or float, H x W x 3); ``compute()`` returns the FID of everything seen since the last
    ``reset()``. Only features are kept (2 x 2048 floats per image or crop).

    Args:
        weights_path: the variant's Inception file; ``None``: its default path under
            ``experiments/pretrained_models/``. Missing -> MissingWeightsError on construction.
        variant: ``'fid'`` (pytorch-fid's port of the TF FID Inception; comparable with
            published FIDs) or ``'torchvision'``.
        crops: ``None`` for whole images, or ``{size: S, per_image: N}`` for N random S x S
            crops per image (the same positions in both images), for small sets.
        seed: seed of the crop positions; ``reset()`` restarts the sequence.
        batch_size: crops per Inception forward pass.
        resize_to: Inception input size; 299 for real FIDs (smaller only for fast tests).
        device: where Inception runs (default: CUDA when available).
    """

    set_metric = True

    def __init__(
        self,
        weights_path: str | None = None,
        variant: Variant = "fid",
        crops: Mapping[str, int] | None = None,
        seed: int = 0,
        batch_size: int = 32,
        resize_to: int = 299,
        device: str | None = None,
    ) -> None:
        self.crop_size_and_count = check_crops(crops)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"FID: batch_size must be a positive int, got {batch_size!r}.")
        self.seed = seed
        self.batch_size = batch_size
        self.network = get_inception_network(weights_path, variant, resize_to, device)
        self.reset()

    def reset(self) -> None:
        """Forget all features and restart the crop positions from ``seed``."""
        self.restored_features: list[np.ndarray] = []
        self.reference_features: list[np.ndarray] = []
        self.rng = np.random.default_rng(self.seed)

    @property
    def count(self) -> int:
        """Number of feature vectors collected per set."""
        return sum(len(f) for f in self.restored_features)

    def to_tensor(self, img: np.ndarray) -> torch.Tensor:
        """H x W x 3 BGR in [0, 255] -> 1 x 3 x H x W RGB float32 in [0, 1] on the device."""
        img = to_hwc_float64(img, "HWC")
        if img.shape[2] != 3:
            raise ValueError(f"FID needs 3-channel BGR images, got shape {img.shape}.")
        rgb = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)) / 255.0
        device = next(self.network.parameters()).device
        return torch.from_numpy(rgb).to(device=device, dtype=torch.float32).unsqueeze(0)

    def crop(self, restored: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The same random crops of both 1 x 3 x H x W images, as N x 3 x S x S batches."""
        if self.crop_size_and_count is None:
            return restored, reference
        size, count = self.crop_size_and_count
        height, width = restored.shape[-2:]
        if size > min(height, width):
            raise ValueError(
                f"FID: crops.size={size} is larger than the {height} x {width} image; lower it."
            )
        tops = self.rng.integers(0, height - size + 1, count)
        lefts = self.rng.integers(0, width - size + 1, count)

        def cut(image: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [image[..., t : t + size, s : s + size] for t, s in zip(tops, lefts)], dim=0
            )

        return cut(restored), cut(reference)

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> np.ndarray:
        chunks = [
            self.network(batch[start : start + self.batch_size])
            for start in range(0, batch.shape[0], self.batch_size)
        ]
        return torch.cat(chunks).double().cpu().numpy()

    def update(self, img: np.ndarray, img2: np.ndarray) -> None:
        """Add one restored image ``img`` and its reference ``img2`` (same shape)."""
        if getattr(img, "shape", None) != getattr(img2, "shape", None):
            raise ValueError(
                f"FID: image shapes differ: img {getattr(img, 'shape', None)} vs img2 "
                f"{getattr(img2, 'shape', None)}."
            )
        restored, reference = self.crop(self.to_tensor(img), self.to_tensor(img2))
        self.restored_features.append(self.features(restored))
        self.reference_features.append(self.features(reference))

    def compute(self) -> float:
        """FID between the restored and the reference features collected so far."""
        if self.count < 2:
            raise ValueError(
                f"FID needs at least 2 images (or crops) per set, got {self.count}; use the "
                f"'crops' option for small sets."
            )
        if self.count < FEATURE_DIM:
            logger.debug(
                "FID on %d samples (< %d feature dimensions): the covariances are singular and "
                "the value is biased; compare only with FIDs computed with the same settings.",
                self.count,
                FEATURE_DIM,
            )
        mu1, sigma1 = feature_statistics(np.concatenate(self.restored_features))
        mu2, sigma2 = feature_statistics(np.concatenate(self.reference_features))
        return frechet_distance(mu1, sigma1, mu2, sigma2)
