"""Synthetic degradations (diffsr.utils.degradations): formulas, determinism, ranges."""

import math

import numpy as np
import pytest
from scipy import ndimage

from diffsr.utils import degradations as D

KINDS = tuple(D.DEGRADATIONS)


def random_image(seed: int = 0, shape=(24, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def plasma_reference(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square with explicit loops and modulo wrapping (same noise draw order)."""
    grid = np.zeros((size, size))
    step, amplitude = size, 100.0
    while step >= 2:
        half, cells = step // 2, size // step
        amplitude /= decay
        noise = rng.uniform(-amplitude, amplitude, (cells, cells))
        for i in range(cells):
            for j in range(cells):
                r, c = i * step, j * step
                corners = [grid[r, c], grid[r, (c + step) % size], grid[(r + step) % size, c]]
                corners.append(grid[(r + step) % size, (c + step) % size])
                grid[r + half, c + half] = sum(corners) / 4 + noise[i, j]
        for offset_r, offset_c in ((0, half), (half, 0)):
            noise = rng.uniform(-amplitude, amplitude, (cells, cells))
            for i in range(cells):
                for j in range(cells):
                    r, c = i * step + offset_r, j * step + offset_c
                    neighbours = [
                        grid[(r - half) % size, c],
                        grid[(r + half) % size, c],
                        grid[r, (c - half) % size],
                        grid[r, (c + half) % size],
                    ]
                    grid[r, c] = sum(neighbours) / 4 + noise[i, j]
        step = half
    return (grid - grid.min()) / (grid.max() - grid.min())


# ----------------------------------------------------------------------------- plasma
@pytest.mark.parametrize("size,decay", [(2, 2.0), (16, 1.4), (32, 2.0)])
def test_plasma_matches_loop_reference(size, decay):
    ours = D.plasma_fractal(size, decay, np.random.default_rng(3))
    reference = plasma_reference(size, decay, np.random.default_rng(3))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_plasma_range_shape_and_seeding():
    a = D.plasma_fractal(64, 2.0, np.random.default_rng(1))
    assert a.shape == (64, 64)
    assert a.min() == 0.0 and a.max() == 1.0
    np.testing.assert_array_equal(a, D.plasma_fractal(64, 2.0, np.random.default_rng(1)))
    assert not np.array_equal(a, D.plasma_fractal(64, 2.0, np.random.default_rng(2)))


def test_plasma_smaller_decay_is_rougher():
    def roughness(decay: float) -> float:
        maps = [D.plasma_fractal(64, decay, np.random.default_rng(s)) for s in range(4)]
        return float(np.mean([np.abs(np.diff(m, axis=1)).mean() for m in maps]))

    assert roughness(1.4) > 1.5 * roughness(2.5)


@pytest.mark.parametrize("size", [0, 1, 24, 100])
def test_plasma_rejects_non_power_of_two(size):
    with pytest.raises(ValueError, match="power of 2"):
        D.plasma_fractal(size, 2.0, np.random.default_rng(0))


# ----------------------------------------------------------------------------- haze
def test_haze_with_constant_depth_is_closed_form():
    img = random_image(1).astype(np.float64)
    beta, airlight, depth = 1.3, 0.85, 0.7
    t = math.exp(-beta * depth)
    expected = img * t + airlight * (1 - t)
    ours = D.apply_haze(img.astype(np.float32), np.full(img.shape[:2], depth), beta, airlight)
    np.testing.assert_allclose(ours, expected, atol=2e-6)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_add_haze_draws_beta_and_airlight_in_range(severity):
    # With constant depth, black and white images under the same draws reveal t and A.
    depth = np.full((8, 8), 1.0, dtype=np.float32)
    black = D.add_haze(np.zeros((8, 8, 3), np.float32), np.random.default_rng(7), severity, depth)
    white = D.add_haze(np.ones((8, 8, 3), np.float32), np.random.default_rng(7), severity, depth)
    t = float(white[0, 0, 0] - black[0, 0, 0])
    airlight = float(black[0, 0, 0]) / (1 - t)
    beta = -math.log(t)
    low = 0.6 + 0.24 * (severity - 1)
    assert low - 1e-4 <= beta <= low + 0.24 + 1e-4
    assert 0.7 - 1e-4 <= airlight <= 1.0 + 1e-4


def test_synthetic_depth_is_smooth_and_in_range():
    depth = D.synthetic_depth(40, 60, np.random.default_rng(0))
    assert depth.shape == (40, 60)
    assert depth.min() == pytest.approx(0.2, abs=1e-6)
    assert depth.max() == pytest.approx(1.2, abs=1e-6)
    # Smooth: neighbouring pixels differ by a small fraction of the range.
    assert np.abs(np.diff(depth, axis=0)).max() < 0.1
    assert np.abs(np.diff(depth, axis=1)).max() < 0.1


def test_haze_rejects_mismatched_depth():
    with pytest.raises(ValueError, match="depth map shape"):
        D.apply_haze(random_image(), np.ones((5, 5)), 1.0, 0.8)


# ----------------------------------------------------------------------------- fog
def test_fog_with_fixed_plasma_is_imagenet_c_formula():
    img = random_image(2).astype(np.float64) * 0.8
    plasma = np.random.default_rng(5).uniform(0, 1, img.shape[:2])
    c0 = 2.5
    m = img.max()
    expected = np.clip((img + c0 * plasma[:, :, None]) * m / (m + c0), 0, 1)
    ours = D.apply_fog(img.astype(np.float32), plasma.astype(np.float32), c0)
    np.testing.assert_allclose(ours, expected, atol=2e-6)


def test_add_fog_uses_cropped_power_of_two_plasma():
    img = random_image(3, (20, 40, 3))
    c0, decay = D.FOG_SETTINGS[3]
    plasma = D.plasma_fractal(64, decay, np.random.default_rng(11))[:20, :40]
    expected = D.apply_fog(img, plasma, c0)
    np.testing.assert_allclose(D.add_fog(img, np.random.default_rng(11), 4), expected, atol=1e-7)


def test_fog_settings_are_imagenet_c():
    assert D.FOG_SETTINGS == ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))


# ----------------------------------------------------------------------------- rain
@pytest.mark.parametrize("length,angle", [(9, 0.0), (15, 30.0), (4.5, -70.0)])
def test_line_kernel_sums_to_one_and_lies_on_the_line(length, angle):
    kernel = D.line_kernel(length, angle)
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)  # centred segment
    centre = kernel.shape[0] // 2
    ys, xs = np.nonzero(kernel)
    # Every weighted pixel's square touches the segment: its centre lies within half a
    # diagonal of the line, and not beyond the segment's ends by more than that.
    theta = math.radians(angle)
    distance = np.abs((xs - centre) * math.cos(theta) - (ys - centre) * math.sin(theta))
    assert distance.max() <= math.sqrt(0.5) + 1e-9
    along = (xs - centre) * math.sin(theta) + (ys - centre) * math.cos(theta)
    assert np.abs(along).max() <= length / 2 + math.sqrt(0.5) + 1e-9


@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_axis_aligned_line_kernel_has_length_equal_weights(angle):
    kernel = D.line_kernel(7, angle)
    centre = kernel.shape[0] // 2
    line = kernel[:, centre] if angle == 0 else kernel[centre, :]
    assert np.count_nonzero(kernel) == 7 and np.count_nonzero(line) == 7
    np.testing.assert_allclose(line[centre - 3 : centre + 4], 1 / 7, rtol=1e-6)


def test_streak_of_one_drop_is_the_scaled_kernel():
    drops = np.zeros((31, 31), np.float32)
    drops[15, 15] = 1.0
    kernel = D.line_kernel(11, 25.0)
    layer = D.streak_layer(drops, kernel, 0.6)
    # Independent convolution: scipy's (flips the kernel; the segment is symmetric).
    expected = ndimage.convolve(drops.astype(np.float64), kernel.astype(np.float64))
    np.testing.assert_allclose(layer, expected * 0.6 / kernel.max(), atol=1e-6)
    assert layer.max() == pytest.approx(0.6, abs=1e-6)


def test_rain_drops_density():
    drops = D.rain_drops(200, 200, 0.01, np.random.default_rng(0))
    assert 0.008 < np.count_nonzero(drops) / drops.size < 0.012
    assert drops.min() == 0.0 and drops.max() <= 1.0


def test_rain_formula_with_haze():
    img = random_image(4).astype(np.float64) * 0.5
    streaks = np.random.default_rng(1).uniform(0, 0.5, img.shape[:2])
    alpha, airlight = 0.7, 0.9
    expected = np.clip(alpha * (img + streaks[:, :, None]) + (1 - alpha) * airlight, 0, 1)
    ours = D.apply_rain(img.astype(np.float32), streaks.astype(np.float32), alpha, airlight)
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    plain = D.apply_rain(img.astype(np.float32), streaks.astype(np.float32))
    np.testing.assert_allclose(plain, np.clip(img + streaks[:, :, None], 0, 1), atol=2e-6)


def test_light_rain_only_brightens_and_equally_per_channel():
    img = random_image(5) * 0.5
    rainy = D.add_rain(img, np.random.default_rng(0), severity=2)
    added = rainy - img
    assert added.min() >= -1e-6 and added.max() > 0.1
    np.testing.assert_allclose(added[:, :, 0], added[:, :, 2], atol=1e-6)


# ----------------------------------------------------------------------------- low light
def test_lowlight_without_noise_is_power_law():
    img = random_image(6).astype(np.float64)
    alpha, beta, gamma = 0.95, 0.7, 2.8
    ours = D.apply_lowlight(img.astype(np.float32), alpha, beta, gamma)
    np.testing.assert_allclose(ours, beta * (alpha * img) ** gamma, atol=1e-6)


def test_lowlight_noise_has_poisson_gaussian_moments():
    img = np.full((64, 64, 3), 0.3, np.float32)
    alpha, beta, gamma, peak, sigma = 1.0, 1.0, 1.0, 100.0, 0.02  # keeps the clean level 0.3
    noisy = D.apply_lowlight(img, alpha, beta, gamma, np.random.default_rng(0), peak, sigma)
    assert noisy.mean() == pytest.approx(0.3, abs=0.003)
    assert noisy.var() == pytest.approx(0.3 / peak + sigma**2, rel=0.1)


@pytest.mark.parametrize("severity", [1, 5])
def test_add_lowlight_darkens_within_the_severity_bounds(severity):
    img = random_image(7)
    dark = D.add_lowlight(img, np.random.default_rng(0), severity)
    setting = D.LOWLIGHT_SETTINGS[severity - 1]
    brightest = setting.beta[1] * img.astype(np.float64) ** setting.gamma[0]
    darkest = setting.beta[0] * (0.9 * img.astype(np.float64)) ** setting.gamma[1]
    # Noise moves pixels, but the image mean stays between the two noise-free extremes.
    assert darkest.mean() - 0.01 < dark.mean() < brightest.mean() + 0.01


# ----------------------------------------------------------------------------- all kinds
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("severity", [1, 5])
def test_deterministic_float32_in_range(kind, severity):
    img = random_image(8, (48, 64, 3))
    a = D.degrade(img, kind, np.random.default_rng(42), severity)
    b = D.degrade(img, kind, np.random.default_rng(42), severity)
    c = D.degrade(img, kind, np.random.default_rng(43), severity)
    assert a.dtype == np.float32 and a.shape == img.shape
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a - img).mean() > 0.002


@pytest.mark.parametrize("kind", ["fog", "haze", "rain"])
def test_channel_order_agnostic(kind):
    # (Low-light noise is drawn per channel, so only its noise-free part is order-free.)
    img = random_image(9)
    rgb = D.degrade(img, kind, np.random.default_rng(1), 3)
    bgr = D.degrade(img[:, :, ::-1].copy(), kind, np.random.default_rng(1), 3)
    np.testing.assert_allclose(rgb, bgr[:, :, ::-1], atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="severity must be an integer from 1 to 5"):
        D.add_fog(random_image(), rng, severity=6)
    with pytest.raises(ValueError, match="divide 8-bit images by 255"):
        D.add_haze(np.zeros((4, 4, 3), np.uint8), rng)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        D.add_rain(random_image() * 2, rng)
    with pytest.raises(ValueError, match="unknown degradation 'snow'"):
        D.degrade(random_image(), "snow", rng)
