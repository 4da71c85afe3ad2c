"""A set of configured metrics evaluated image by image (validation and test share it)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from diffsr.archs.backbone_util import MissingWeightsError
from diffsr.utils.registry import METRIC_REGISTRY

__all__ = ["MetricSet"]

logger = logging.getLogger("diffsr")


class MetricSet:
    """Metrics from ``val.metrics``: ``{name: {type: ..., better: higher|lower, **kwargs}}``.

    Per-image metrics are registered functions ``fn(img, img2, **kwargs) -> float`` and are
    averaged; set-level metrics (FID) are registered classes with ``set_metric = True`` and
    ``update(img, img2)`` / ``compute()``. Images are HWC BGR in [0, 255] (``tensor2img``).

    A metric whose weight file is missing (LPIPS, FID) is skipped with one warning that names
    the file it needs; it never reports a made-up value.
    """

    def __init__(self, metric_opts: dict[str, dict[str, Any]] | None) -> None:
        self.opts = dict(metric_opts or {})
        self.per_image: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.set_level: dict[str, Any] = {}
        for name, opt in list(self.opts.items()):
            kwargs = {k: v for k, v in opt.items() if k not in ("type", "better")}
            target = METRIC_REGISTRY.get(opt["type"])
            try:
                if getattr(target, "set_metric", False):
                    self.set_level[name] = target(**kwargs)
                else:
                    self.per_image[name] = (target, kwargs)
            except MissingWeightsError as err:
                self._skip(name, err)
        self.sums: dict[str, float] = dict.fromkeys(self.per_image, 0.0)
        self.count = 0

    def _skip(self, name: str, err: MissingWeightsError) -> None:
        logger.warning("Metric %r skipped: %s", name, err)
        self.opts.pop(name, None)
        self.per_image.pop(name, None)
        self.set_level.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self.opts)

    def higher_is_better(self, name: str) -> bool:
        return self.opts[name].get("better", "higher") == "higher"

    def update(self, restored: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """Add one image pair; returns this image's per-image metric values."""
        values = {}
        for name, (fn, kwargs) in list(self.per_image.items()):
            try:
                values[name] = float(fn(restored, reference, **kwargs))
            except MissingWeightsError as err:  # per-image metrics load weights on first use
                self._skip(name, err)
                continue
            self.sums[name] += values[name]
        for metric in self.set_level.values():
            metric.update(restored, reference)
        self.count += 1
        return values

    def compute(self) -> dict[str, float]:
        """Means of the per-image metrics and the set-level values, in option order."""
        results = {}
        for name in self.opts:
            if name in self.per_image:
                results[name] = self.sums[name] / max(self.count, 1)
            else:
                results[name] = float(self.set_level[name].compute())
        return results
