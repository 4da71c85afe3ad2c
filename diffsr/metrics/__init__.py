"""Image-quality metrics. Every ``*_metric.py`` here is imported, registering its functions.

Registered metrics are functions ``metric(img, img2, **options) -> float`` on numpy images in
[0, 255]; :func:`calculate_metric` calls one from an option block as BasicSR does.
"""

from __future__ import annotations

from typing import Any

from diffsr.utils.registry import METRIC_REGISTRY, import_modules_with_suffix

import_modules_with_suffix(__name__, "_metric")

from diffsr.metrics.psnr_metric import calculate_psnr, calculate_psnr_pt  # noqa: E402
from diffsr.metrics.ssim_metric import calculate_ssim, calculate_ssim_pt  # noqa: E402

__all__ = [
    "METRIC_REGISTRY",
    "calculate_metric",
    "calculate_psnr",
    "calculate_psnr_pt",
    "calculate_ssim",
    "calculate_ssim_pt",
]

# Keys of a metric option block that are read by the trainer, not passed to the metric.
TRAINER_KEYS = ("better",)


def calculate_metric(data: dict[str, Any], opt: dict[str, Any]) -> float:
    """Compute the metric named by ``opt['type']`` on ``data`` (``{'img': restored, 'img2': gt}``).

    Example option block: ``{type: calculate_psnr, crop_border: 0, test_y_channel: false,
    better: higher}``; ``better`` is for the trainer and ignored here.
    """
    options = {key: value for key, value in opt.items() if key not in TRAINER_KEYS}
    return METRIC_REGISTRY.build(options, **data)
