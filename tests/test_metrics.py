"""PSNR / SSIM against independent references (direct formulas, scikit-image)."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffsr.metrics import (
    METRIC_REGISTRY,
    calculate_metric,
    calculate_psnr,
    calculate_psnr_pt,
    calculate_ssim,
    calculate_ssim_pt,
)


@pytest.fixture
def image_pair() -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish uint8 BGR image and a noisy version of it (SSIM far from 0 and 1)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    base = np.stack([128 + 100 * np.sin(xx / 7 + c) * np.cos(yy / 5 - c) for c in range(3)], -1)
    noisy = base + rng.normal(0, 20, base.shape)
    return np.clip(base, 0, 255).round().astype(np.uint8), np.clip(noisy, 0, 255).round().astype(
        np.uint8
    )


def direct_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 20 * math.log10(255.0) - 10 * math.log10(mse)


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        return structural_similarity(a, b, **options)
    return structural_similarity(a, b, channel_axis=2, **options)


def bt601_y(bgr: np.ndarray) -> np.ndarray:
    """Studio-range BT.601 luma: Y = 16 + 219 * (0.299 R + 0.587 G + 0.114 B) / 255."""
    bgr = bgr.astype(np.float64)
    luma = 0.299 * bgr[..., 2] + 0.587 * bgr[..., 1] + 0.114 * bgr[..., 0]
    return 16.0 + 219.0 * luma / 255.0


def test_registered_names():
    assert METRIC_REGISTRY.get("calculate_psnr") is calculate_psnr
    assert METRIC_REGISTRY.get("calculate_ssim") is calculate_ssim


def test_psnr_matches_formula_and_skimage(image_pair):
    a, b = image_pair
    ours = calculate_psnr(a, b, crop_border=0)
    assert ours == pytest.approx(direct_psnr(a, b), abs=1e-10)
    assert ours == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)
    # float input in [0, 255] gives the same number as uint8
    assert calculate_psnr(a.astype(np.float32), b.astype(np.float32), 0) == pytest.approx(ours)


def test_psnr_identical_is_inf(image_pair):
    a, _ = image_pair
    assert calculate_psnr(a, a.copy(), 0) == math.inf
    assert calculate_ssim(a, a.copy(), 0) == pytest.approx(1.0, abs=1e-12)


def test_crop_border(image_pair):
    a, b = image_pair
    crop = 4
    inner = (slice(crop, -crop), slice(crop, -crop))
    assert calculate_psnr(a, b, crop) == pytest.approx(direct_psnr(a[inner], b[inner]), abs=1e-10)
    assert calculate_ssim(a, b, crop) == pytest.approx(skimage_ssim(a[inner], b[inner]), abs=1e-10)
    # differences only inside the cropped border do not count
    c = a.copy()
    c[:crop] = 255 - c[:crop]
    assert calculate_psnr(a, c, crop) == math.inf
    assert calculate_psnr(a, c, 0) < 20


def test_ssim_matches_skimage(image_pair):
    a, b = image_pair
    ours = calculate_ssim(a, b, crop_border=0)
    assert 0.2 < ours < 0.9
    assert ours == pytest.approx(skimage_ssim(a, b), abs=1e-10)
    assert calculate_ssim(a[..., 0], b[..., 0], 0) == pytest.approx(
        skimage_ssim(a[..., 0], b[..., 0]), abs=1e-10
    )


def test_y_channel(image_pair):
    a, b = image_pair
    ya, yb = bt601_y(a), bt601_y(b)
    assert ya.min() >= 16 and ya.max() <= 235
    assert calculate_psnr(a, b, 0, test_y_channel=True) == pytest.approx(
        direct_psnr(ya, yb), abs=1e-8
    )
    assert calculate_ssim(a, b, 0, test_y_channel=True) == pytest.approx(
        skimage_ssim(ya, yb), abs=1e-10
    )


def test_chw_input_order(image_pair):
    a, b = image_pair
    chw = a.transpose(2, 0, 1), b.transpose(2, 0, 1)
    assert calculate_psnr(*chw, 0, input_order="CHW") == pytest.approx(calculate_psnr(a, b, 0))
    assert calculate_ssim(*chw, 0, input_order="CHW") == pytest.approx(calculate_ssim(a, b, 0))


def test_bad_inputs(image_pair):
    a, b = image_pair
    with pytest.raises(ValueError, match=r"\(40, 48, 3\).*\(40, 40, 3\)"):
        calculate_psnr(a, b[:, :40], 0)
    with pytest.raises(ValueError, match="input_order"):
        calculate_ssim(a, b, 0, input_order="WHC")
    with pytest.raises(ValueError, match="crop_border"):
        calculate_psnr(a, b, -1)
    with pytest.raises(ValueError, match="11x11"):
        calculate_ssim(a, b, 15)
    with pytest.raises(TypeError, match="calculate_psnr_pt"):
        calculate_psnr(torch.zeros(4, 4, 3), torch.zeros(4, 4, 3), 0)


def test_calculate_metric_from_options(image_pair):
    a, b = image_pair
    opt = {"type": "calculate_ssim", "crop_border": 2, "test_y_channel": True, "better": "higher"}
    expected = skimage_ssim(bt601_y(a)[2:-2, 2:-2], bt601_y(b)[2:-2, 2:-2])
    assert calculate_metric({"img": a, "img2": b}, opt) == pytest.approx(expected, abs=1e-10)
    assert calculate_metric({"img": a, "img2": b}, {"type": "calculate_psnr"}) == pytest.approx(
        direct_psnr(a, b)
    )


@pytest.mark.parametrize("test_y_channel", [False, True])
@pytest.mark.parametrize("crop_border", [0, 3])
def test_tensor_versions_equal_numpy(crop_border, test_y_channel):
    restored = torch.rand(2, 3, 24, 32, dtype=torch.float64)
    gt = (restored + 0.1 * torch.randn_like(restored)).clamp(0, 1)

    def to_bgr255(batch: torch.Tensor, i: int) -> np.ndarray:
        return batch[i].permute(1, 2, 0).numpy()[..., ::-1] * 255.0

    psnr = calculate_psnr_pt(restored, gt, crop_border, test_y_channel)
    ssim = calculate_ssim_pt(restored, gt, crop_border, test_y_channel)
    assert psnr.shape == ssim.shape == (2,)
    for i in range(2):
        pair = to_bgr255(restored, i), to_bgr255(gt, i)
        assert psnr[i].item() == pytest.approx(
            calculate_psnr(*pair, crop_border, test_y_channel=test_y_channel), abs=1e-9
        )
        assert ssim[i].item() == pytest.approx(
            calculate_ssim(*pair, crop_border, test_y_channel=test_y_channel), abs=1e-9
        )


def test_tensor_versions_edge_cases():
    x = torch.rand(1, 3, 16, 16)
    assert calculate_psnr_pt(x, x.clone()).item() == math.inf
    assert calculate_ssim_pt(x, x.clone()).item() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="differ"):
        calculate_psnr_pt(x, x[..., :8])
