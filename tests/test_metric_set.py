"""MetricSet: per-image means, set-level metrics, and metrics skipped for missing weights."""

import logging

import numpy as np
import pytest

from diffsr.metrics.metric_set import MetricSet


def test_means_and_missing_weights_are_skipped_not_faked(tmp_path, caplog):
    rng = np.random.default_rng(0)
    pairs = [
        (
            rng.integers(0, 256, (16, 16, 3)).astype(np.uint8),
            rng.integers(0, 256, (16, 16, 3)).astype(np.uint8),
        )
        for _ in range(3)
    ]
    metrics = MetricSet(
        {
            "psnr": {"type": "calculate_psnr", "crop_border": 0},
            "lpips": {
                "type": "calculate_lpips",
                "net": "alex",
                "weights_path": str(tmp_path / "alexnet-owt-7be5be79.pth"),
                "lin_path": str(tmp_path / "alex.pth"),
                "better": "lower",
            },
        }
    )
    with caplog.at_level(logging.WARNING, logger="diffsr"):
        values = [metrics.update(a, b) for a, b in pairs]
    want = [10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)) for a, b in pairs]
    assert [v["psnr"] for v in values] == pytest.approx(want)
    assert metrics.compute() == {"psnr": pytest.approx(np.mean(want))}
    assert "alexnet-owt-7be5be79.pth" in caplog.text and "skipped" in caplog.text
    assert metrics.names == ["psnr"]
