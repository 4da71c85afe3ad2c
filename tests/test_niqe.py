"""NIQE against BasicSR's own calculate_niqe, and the MATLAB-style resize it uses.

The reference numbers were computed once by BasicSR's basicsr/metrics/niqe.py (commit
8d56e3a of XPixelGroup/BasicSR, imports patched, run in a scratch folder outside this
repository) on the images that :func:`images` generates.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from diffsr.metrics import METRIC_REGISTRY, calculate_metric
from diffsr.metrics.matlab_resize import matlab_imresize
from diffsr.metrics.metric_set import MetricSet
from diffsr.metrics.niqe_metric import PRISTINE_PARAMS, calculate_niqe, pristine_model

# calculate_niqe(img, crop_border, input_order, convert_to) of BasicSR, per image and variant.
REFERENCE = {
    "waves_textured": {
        "y": 17.093057872379024,
        "gray": 17.174739417510686,
        "y_crop8": 16.811783611255446,
        "chw_y": 17.093057872379024,
    },
    "noise": {
        "y": 35.75896366982784,
        "gray": 35.51632421511843,
        "y_crop8": 43.022764150700795,
        "chw_y": 35.75896366982784,
    },
    "gradient_sine": {  # saturated (flat) regions: blocks whose features are NaN
        "y": 17.10933329011171,
        "gray": 17.27429185286013,
        "y_crop8": 17.234544143875095,
        "chw_y": 17.10933329011171,
    },
}
# BasicSR's imresize(img, 0.5) (antialiased) of the 7 x 9 image of test_matlab_imresize.
RESIZE_HALF = [
    [0.315925, 0.312182, 0.517011, 0.513331, 0.283257],
    [0.553774, 0.452892, 0.394293, 0.514554, 0.444373],
    [0.565787, 0.590405, 0.532701, 0.303527, 0.406354],
    [0.638296, 0.61729, 0.704704, 0.264068, 0.613524],
]
# Its imresize(img, 2.0), first 3 rows and 5 columns.
RESIZE_DOUBLE = [
    [-0.058789, -0.051583, -0.037171, 0.02101, 0.122961],
    [0.112399, 0.143413, 0.20544, 0.211808, 0.162518],
    [0.454776, 0.533404, 0.690661, 0.593404, 0.241632],
]


@functools.cache
def images() -> dict[str, np.ndarray]:
    """Three BGR uint8 test images (the generator the reference numbers were computed on)."""
    rng = np.random.default_rng(12)
    out = {}
    yy, xx = np.mgrid[0:300, 0:320].astype(np.float64)
    waves = sum(
        rng.uniform(20, 60)
        * np.sin(xx * rng.uniform(0.02, 0.3) + yy * rng.uniform(0.02, 0.3) + rng.uniform(0, 6))
        for _ in range(6)
    )
    tex = rng.normal(0, 12, (300, 320, 3))
    out["waves_textured"] = (
        np.clip(128 + waves[..., None] * np.array([1.0, 0.8, 0.6]) + tex, 0, 255)
        .round()
        .astype(np.uint8)
    )
    out["noise"] = rng.integers(0, 256, (288, 200, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:250, 0:400]
    grad = (
        np.stack([xx * 0.8, yy * 0.9, (xx + yy) * 0.4], -1)
        + 20 * np.sin(xx / 7.0)[..., None]
        + rng.normal(0, 5, (250, 400, 3))
    )
    out["gradient_sine"] = np.clip(grad, 0, 255).round().astype(np.uint8)
    return out


@pytest.mark.parametrize("name", list(REFERENCE))
def test_niqe_matches_basicsr(name):
    img = images()[name]
    expected = REFERENCE[name]
    assert calculate_niqe(img, crop_border=0) == pytest.approx(expected["y"], abs=2e-4)
    assert calculate_niqe(img, convert_to="gray") == pytest.approx(expected["gray"], abs=2e-4)
    assert calculate_niqe(img, crop_border=8) == pytest.approx(expected["y_crop8"], abs=2e-4)
    chw = calculate_niqe(img.transpose(2, 0, 1), input_order="CHW")
    assert chw == pytest.approx(expected["chw_y"], abs=2e-4)


def test_matlab_imresize_matches_basicsr():
    img = (np.arange(7 * 9).reshape(7, 9) ** 1.5 % 17 / 17.0).astype(np.float32)
    assert matlab_imresize(img, 0.5) == pytest.approx(np.array(RESIZE_HALF), abs=2e-6)
    assert matlab_imresize(img, 2.0)[:3, :5] == pytest.approx(np.array(RESIZE_DOUBLE), abs=2e-6)
    assert matlab_imresize(img, 2.0).shape == (14, 18)
    assert matlab_imresize(np.full((10, 6), 0.3), 0.5) == pytest.approx(np.full((5, 3), 0.3))


def test_niqe_in_val_metrics_and_registry():
    """With the reference image passed as BasicSR's validation does, and through MetricSet."""
    img = images()["waves_textured"]
    expected = REFERENCE["waves_textured"]["y"]
    block = {"type": "calculate_niqe", "crop_border": 0, "num_thread": 8, "better": "lower"}
    assert calculate_metric({"img": img, "img2": img[::-1]}, block) == pytest.approx(
        expected, abs=2e-4
    )
    metrics = MetricSet({"niqe": block})
    metrics.update(img, img)
    assert not metrics.higher_is_better("niqe")
    assert metrics.compute()["niqe"] == pytest.approx(expected, abs=2e-4)
    assert "calculate_niqe" in METRIC_REGISTRY
    with pytest.raises(Exception, match="convert_too"):
        METRIC_REGISTRY.build({"type": "calculate_niqe", "convert_too": "y"}, img=img, img2=None)


def test_niqe_errors_are_explicit():
    img = images()["waves_textured"]
    with pytest.raises(ValueError, match="at least two 96 x 96 blocks"):
        calculate_niqe(img[:100, :150])
    with pytest.raises(ValueError, match="convert_to"):
        calculate_niqe(img, convert_to="lab")
    with pytest.raises(ValueError, match="input_order"):
        calculate_niqe(img, input_order="WHC")
    with pytest.raises(ValueError, match="too flat"):
        calculate_niqe(np.full((200, 200, 3), 128, np.uint8))


def test_pristine_parameters_ship_with_the_package():
    mu, cov, window = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and window.shape == (7, 7)
    assert window.sum() == pytest.approx(1.0)
    assert (PRISTINE_PARAMS.parent / "README.md").is_file()
    assert PRISTINE_PARAMS.parent.parent.name == "metrics"
