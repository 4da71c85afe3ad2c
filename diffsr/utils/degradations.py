"""Synthetic weather and illumination degradations: haze, fog, rain and low light.

Every function works on H x W x C float images in [0, 1] (C = 3 in RGB or BGR order, or C = 1);
the channel order does not matter because each model treats all channels alike. Results are
float32 in [0, 1]. Randomness comes only from the ``np.random.Generator`` passed in, so a result
is fully determined by the image, the options and the generator's state.

Each degradation has two levels:

* ``apply_<kind>(img, ...)``: the bare formula with every parameter given explicitly;
* ``add_<kind>(img, rng, severity)``: draws the parameters for a severity from 1 (mild) to 5
  (strong) and applies the formula. :func:`degrade` dispatches on the kind's name.

Models (see docs/evaluation_tools.md for the parameter tables):

* haze, atmospheric scattering: ``I = J t + A (1 - t)``, ``t = exp(-beta d)``;
* fog, as in ImageNet-C: ``x' = clip((x + c0 P) m / (m + c0), 0, 1)``, ``m = max(x)``, ``P`` a
  diamond-square plasma fractal;
* rain: ``O = B + S`` with streaks ``S`` from motion-blurred thresholded noise; heavy rain adds
  haze: ``O = alpha (B + S) + (1 - alpha) A``;
* low light: ``I_low = beta (alpha I)^gamma`` plus Poisson-Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "DEGRADATIONS",
    "FOG_SETTINGS",
    "HAZE_AIRLIGHT_RANGE",
    "HAZE_BETA_RANGE",
    "LOWLIGHT_SETTINGS",
    "RAIN_SETTINGS",
    "LowLightSetting",
    "RainSetting",
    "add_fog",
    "add_haze",
    "add_lowlight",
    "add_rain",
    "apply_fog",
    "apply_haze",
    "apply_lowlight",
    "apply_rain",
    "degrade",
    "haze_beta_range",
    "line_kernel",
    "plasma_fractal",
    "rain_drops",
    "streak_layer",
    "synthetic_depth",
]

SEVERITIES = (1, 2, 3, 4, 5)

# ----------------------------------------------------------------------------- parameters
HAZE_BETA_RANGE = (0.6, 1.8)
HAZE_AIRLIGHT_RANGE = (0.7, 1.0)
SYNTHETIC_DEPTH_RANGE = (0.2, 1.2)

# ImageNet-C's fog: (c0, wibble decay) for severities 1-5.
FOG_SETTINGS = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
PLASMA_WIBBLE = 100.0


@dataclass(frozen=True)
class RainSetting:
    """Rain parameters of one severity.

    ``density``: fraction of pixels that seed a streak; ``length``: streak length in pixels
    (jittered by +-20 % per image); ``strength``: brightness of the brightest streak pixel;
    ``max_angle``: streak angle drawn from [-max_angle, max_angle] degrees off vertical;
    ``haze_alpha``: range of the heavy-rain blend weight ``alpha`` (``None``: no haze).
    """

    density: float
    length: float
    strength: float
    max_angle: float = 20.0
    haze_alpha: tuple[float, float] | None = None


RAIN_SETTINGS = (
    RainSetting(density=0.002, length=10, strength=0.35),
    RainSetting(density=0.004, length=15, strength=0.45),
    RainSetting(density=0.006, length=20, strength=0.55),
    RainSetting(density=0.008, length=25, strength=0.65, haze_alpha=(0.75, 0.9)),
    RainSetting(density=0.010, length=30, strength=0.75, haze_alpha=(0.6, 0.75)),
)
RAIN_AIRLIGHT_RANGE = (0.7, 1.0)


@dataclass(frozen=True)
class LowLightSetting:
    """Low-light parameters of one severity: ranges for ``gamma`` and ``beta`` (``alpha`` is
    always drawn from [0.9, 1]), the photon count ``shot_peak`` of a white pixel (Poisson
    noise; fewer photons is noisier) and the read-noise standard deviation ``read_sigma``."""

    gamma: tuple[float, float]
    beta: tuple[float, float]
    shot_peak: float
    read_sigma: float


LOWLIGHT_ALPHA_RANGE = (0.9, 1.0)
LOWLIGHT_SETTINGS = (
    LowLightSetting(gamma=(2.0, 2.3), beta=(0.9, 1.0), shot_peak=1000.0, read_sigma=0.002),
    LowLightSetting(gamma=(2.3, 2.6), beta=(0.8, 0.9), shot_peak=500.0, read_sigma=0.004),
    LowLightSetting(gamma=(2.6, 2.9), beta=(0.7, 0.8), shot_peak=250.0, read_sigma=0.006),
    LowLightSetting(gamma=(2.9, 3.2), beta=(0.6, 0.7), shot_peak=120.0, read_sigma=0.008),
    LowLightSetting(gamma=(3.2, 3.5), beta=(0.5, 0.6), shot_peak=60.0, read_sigma=0.010),
)


# ----------------------------------------------------------------------------- checks
def _check_image(img: np.ndarray) -> np.ndarray:
    """The image as float32 H x W x C, or a ValueError saying what is expected."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a numpy array image, got {type(img).__name__}.")
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W x 3 (or x 1) image, got shape {img.shape}.")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(
            f"expected a float image in [0, 1], got {img.dtype}; divide 8-bit images by 255."
        )
    low, high = float(img.min()), float(img.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"expected values in [0, 1], got [{low:.4g}, {high:.4g}].")
    return img.astype(np.float32, copy=False)


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}.")
    return int(severity)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# ----------------------------------------------------------------------------- haze
def haze_beta_range(severity: int) -> tuple[float, float]:
    """The ``beta`` interval of a severity: [0.6, 1.8] cut into five equal, adjacent bins."""
    severity = _check_severity(severity)
    low, high = HAZE_BETA_RANGE
    width = (high - low) / len(SEVERITIES)
    return low + width * (severity - 1), low + width * severity


def synthetic_depth(
    height: int,
    width: int,
    rng: np.random.Generator,
    depth_range: tuple[float, float] = SYNTHETIC_DEPTH_RANGE,
) -> np.ndarray:
    """A smooth pseudo depth map, H x W float32 in ``depth_range``.

    70 % a linear ramp along a random direction (a scene receding towards one side) plus 30 %
    low-frequency variation (a 4 x 4 grid of uniform values upsampled bicubically), rescaled
    so that its minimum and maximum are the ends of ``depth_range``.
    """
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = math.cos(angle) * xs / max(width - 1, 1) + math.sin(angle) * ys / max(height - 1, 1)
    coarse = rng.uniform(0.0, 1.0, (4, 4)).astype(np.float32)
    blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    depth = 0.7 * _normalise(ramp) + 0.3 * _normalise(blobs)
    near, far = depth_range
    return (near + (far - near) * _normalise(depth)).astype(np.float32)


def apply_haze(img: np.ndarray, depth: np.ndarray, beta: float, airlight: float) -> np.ndarray:
    """Atmospheric scattering ``I = J t + A (1 - t)`` with ``t = exp(-beta * depth)``.

    ``img`` (J): H x W x C in [0, 1]; ``depth``: H x W (or a scalar), non-negative, in the
    units ``beta`` is per; ``airlight`` (A): the grey level of the haze, in [0, 1].
    """
    img = _check_image(img)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 2:
        if depth.shape != img.shape[:2]:
            raise ValueError(f"depth map shape {depth.shape} differs from image {img.shape[:2]}.")
        depth = depth[:, :, None]
    elif depth.ndim != 0:
        raise ValueError(f"depth must be an H x W map or a scalar, got shape {depth.shape}.")
    if float(depth.min()) < 0:
        raise ValueError("depth must be non-negative.")
    transmission = np.exp(-beta * depth)
    hazy = img * transmission + airlight * (1.0 - transmission)
    return np.clip(hazy, 0.0, 1.0).astype(np.float32)


def add_haze(
    img: np.ndarray,
    rng: np.random.Generator,
    severity: int = 3,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """Haze of a severity: ``beta`` from :func:`haze_beta_range`, ``A`` from [0.7, 1].

    Without ``depth`` a :func:`synthetic_depth` map in [0.2, 1.2] is drawn after the two
    parameters.
    """
    img = _check_image(img)
    beta = _uniform(rng, haze_beta_range(severity))
    airlight = _uniform(rng, HAZE_AIRLIGHT_RANGE)
    if depth is None:
        depth = synthetic_depth(img.shape[0], img.shape[1], rng)
    return apply_haze(img, depth, beta, airlight)


# ----------------------------------------------------------------------------- fog
def plasma_fractal(
    size: int, decay: float, rng: np.random.Generator, wibble: float = PLASMA_WIBBLE
) -> np.ndarray:
    """A diamond-square plasma fractal, ``size x size`` float64 normalised to [0, 1].

    The map wraps around (it tiles seamlessly) and starts from 0 at the corner. Each octave
    halves the step: the *square* step sets every square's centre to the mean of its four
    corners, the *diamond* step sets every edge midpoint to the mean of its four neighbours
    (two corners, two centres); each new value gets uniform noise in [-wibble, wibble], and
    ``wibble`` is divided by ``decay`` every octave (a larger decay gives a smoother map).
    Because the map is normalised at the end, the starting ``wibble`` only scales it.
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma map size must be a power of 2 (>= 2), got {size}.")
    if decay <= 0:
        raise ValueError(f"plasma wibble decay must be positive, got {decay}.")
    grid = np.zeros((size, size), dtype=np.float64)
    step, amplitude = size, float(wibble)
    while step >= 2:
        half = step // 2
        amplitude /= decay
        # Square step: centres from the corners (roll = neighbour one step on, wrapping).
        corners = grid[::step, ::step]
        right, below = np.roll(corners, -1, axis=1), np.roll(corners, -1, axis=0)
        below_right = np.roll(below, -1, axis=1)
        centre_mean = (corners + right + below + below_right) / 4.0
        grid[half::step, half::step] = centre_mean + rng.uniform(
            -amplitude, amplitude, corners.shape
        )
        # Diamond step: midpoints of the top edges (row of corners) and left edges (column).
        centres = grid[half::step, half::step]
        centre_above = np.roll(centres, 1, axis=0)
        centre_left = np.roll(centres, 1, axis=1)
        top_mean = (corners + right + centres + centre_above) / 4.0
        left_mean = (corners + below + centres + centre_left) / 4.0
        grid[::step, half::step] = top_mean + rng.uniform(-amplitude, amplitude, corners.shape)
        grid[half::step, ::step] = left_mean + rng.uniform(-amplitude, amplitude, corners.shape)
        step = half
    return _normalise(grid)


def _fog_plasma(height: int, width: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A plasma map on the smallest power-of-2 square covering the image, cropped to H x W."""
    size = 1 << max(1, math.ceil(math.log2(max(height, width))))
    return plasma_fractal(size, decay, rng)[:height, :width]


def apply_fog(img: np.ndarray, plasma: np.ndarray, c0: float) -> np.ndarray:
    """ImageNet-C fog ``clip((x + c0 P) m / (m + c0), 0, 1)``, ``m`` the image's maximum.

    ``plasma`` (P): H x W in [0, 1]; ``c0``: fog thickness (1.5 to 3 in ImageNet-C).
    """
    img = _check_image(img)
    plasma = np.asarray(plasma, dtype=np.float32)
    if plasma.shape != img.shape[:2]:
        raise ValueError(f"plasma shape {plasma.shape} differs from image {img.shape[:2]}.")
    peak = float(img.max())
    foggy = (img + c0 * plasma[:, :, None]) * peak / (peak + c0)
    return np.clip(foggy, 0.0, 1.0).astype(np.float32)


def add_fog(img: np.ndarray, rng: np.random.Generator, severity: int = 3) -> np.ndarray:
    """Fog of a severity with ImageNet-C's ``(c0, decay)`` table :data:`FOG_SETTINGS`."""
    img = _check_image(img)
    c0, decay = FOG_SETTINGS[_check_severity(severity) - 1]
    return apply_fog(img, _fog_plasma(img.shape[0], img.shape[1], decay, rng), c0)


# ----------------------------------------------------------------------------- rain
def line_kernel(length: float, angle: float) -> np.ndarray:
    """A motion-blur kernel: a line segment through the centre, odd square size, summing to 1.

    ``length`` in pixels (>= 1); ``angle`` in degrees off vertical, positive leaning towards
    +x at the bottom (direction vector ``(sin a, cos a)`` in (x, y) image coordinates, y down).
    Each pixel's weight is the length of the segment inside the pixel's square (estimated with
    16 samples per pixel of length), so a vertical or horizontal segment of integer length L
    covers L pixels with equal weights and a slanted one is anti-aliased by its chord lengths.
    """
    if length < 1:
        raise ValueError(f"line length must be >= 1 pixel, got {length}.")
    radius = math.ceil(length / 2)
    size = 2 * radius + 1
    samples = math.ceil(16 * length)
    offsets = ((np.arange(samples) + 0.5) / samples - 0.5) * length  # midpoints along the line
    theta = math.radians(angle)
    cols = np.floor(radius + offsets * math.sin(theta) + 0.5).astype(int)
    rows = np.floor(radius + offsets * math.cos(theta) + 0.5).astype(int)
    kernel = np.zeros((size, size), dtype=np.float64)
    np.add.at(kernel, (rows, cols), 1.0)
    return (kernel / kernel.sum()).astype(np.float32)


def rain_drops(height: int, width: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """Thresholded uniform noise, H x W float32: about ``density`` of the pixels are non-zero.

    A pixel with noise ``u > 1 - density`` gets ``(u - (1 - density)) / density`` (uniform in
    (0, 1]), every other pixel 0.
    """
    if not 0 < density <= 1:
        raise ValueError(f"rain density must be in (0, 1], got {density}.")
    noise = rng.uniform(0.0, 1.0, (height, width)).astype(np.float32)
    return np.clip((noise - (1.0 - density)) / density, 0.0, 1.0)


def streak_layer(drops: np.ndarray, kernel: np.ndarray, strength: float) -> np.ndarray:
    """Rain streaks ``S``, H x W float32 in [0, 1]: drops blurred along the kernel's line.

    The blur is scaled by ``strength / kernel.max()`` so that an isolated drop of value 1
    gives a streak whose brightest pixel is ``strength``; overlapping streaks add up (clipped).
    """
    blurred = cv2.filter2D(
        drops.astype(np.float32), -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT
    )
    return np.clip(blurred * (strength / float(kernel.max())), 0.0, 1.0)


def apply_rain(
    img: np.ndarray, streaks: np.ndarray, alpha: float = 1.0, airlight: float = 1.0
) -> np.ndarray:
    """Rain ``O = alpha (B + S) + (1 - alpha) A``, clipped to [0, 1] (``alpha = 1``: ``B + S``).

    ``img`` (B): H x W x C in [0, 1]; ``streaks`` (S): H x W, added to every channel (rain is
    achromatic); ``alpha`` in (0, 1] and ``airlight`` (A) make the veiling haze of heavy rain.
    """
    img = _check_image(img)
    streaks = np.asarray(streaks, dtype=np.float32)
    if streaks.shape != img.shape[:2]:
        raise ValueError(f"streak layer shape {streaks.shape} differs from image {img.shape[:2]}.")
    if not 0 < alpha <= 1:
        raise ValueError(f"rain alpha must be in (0, 1], got {alpha}.")
    rainy = alpha * (img + streaks[:, :, None]) + (1.0 - alpha) * airlight
    return np.clip(rainy, 0.0, 1.0).astype(np.float32)


def add_rain(img: np.ndarray, rng: np.random.Generator, severity: int = 3) -> np.ndarray:
    """Rain of a severity (:data:`RAIN_SETTINGS`); severities 4 and 5 add haze.

    Draw order: angle, length, drops, then (heavy rain) alpha and airlight.
    """
    img = _check_image(img)
    setting = RAIN_SETTINGS[_check_severity(severity) - 1]
    angle = _uniform(rng, (-setting.max_angle, setting.max_angle))
    length = setting.length * _uniform(rng, (0.8, 1.2))
    drops = rain_drops(img.shape[0], img.shape[1], setting.density, rng)
    streaks = streak_layer(drops, line_kernel(length, angle), setting.strength)
    if setting.haze_alpha is None:
        return apply_rain(img, streaks)
    alpha = _uniform(rng, setting.haze_alpha)
    return apply_rain(img, streaks, alpha, _uniform(rng, RAIN_AIRLIGHT_RANGE))


# ----------------------------------------------------------------------------- low light
def apply_lowlight(
    img: np.ndarray,
    alpha: float,
    beta: float,
    gamma: float,
    rng: np.random.Generator | None = None,
    shot_peak: float | None = None,
    read_sigma: float = 0.0,
) -> np.ndarray:
    """Low light ``I_low = beta (alpha I)^gamma``, then Poisson-Gaussian noise, clipped to [0, 1].

    Noise (only with ``rng``): ``Poisson(shot_peak * I_low) / shot_peak`` (shot noise; skipped
    when ``shot_peak`` is None) plus ``N(0, read_sigma^2)`` (read noise), drawn per pixel and
    channel in that order.
    """
    img = _check_image(img)
    dark = (beta * np.power(alpha * img.astype(np.float64), gamma)).astype(np.float32)
    if rng is None:
        if shot_peak is not None or read_sigma > 0:
            raise ValueError("low-light noise needs a random generator (rng).")
        return np.clip(dark, 0.0, 1.0)
    noisy = dark
    if shot_peak is not None:
        if shot_peak <= 0:
            raise ValueError(f"shot_peak (photons of a white pixel) must be > 0, got {shot_peak}.")
        noisy = (rng.poisson(dark.astype(np.float64) * shot_peak) / shot_peak).astype(np.float32)
    if read_sigma > 0:
        noisy = noisy + rng.normal(0.0, read_sigma, dark.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def add_lowlight(img: np.ndarray, rng: np.random.Generator, severity: int = 3) -> np.ndarray:
    """Low light of a severity (:data:`LOWLIGHT_SETTINGS`); draws alpha, beta, gamma, noise."""
    setting = LOWLIGHT_SETTINGS[_check_severity(severity) - 1]
    alpha = _uniform(rng, LOWLIGHT_ALPHA_RANGE)
    beta = _uniform(rng, setting.beta)
    gamma = _uniform(rng, setting.gamma)
    return apply_lowlight(img, alpha, beta, gamma, rng, setting.shot_peak, setting.read_sigma)


# ----------------------------------------------------------------------------- dispatch
DEGRADATIONS: dict[str, Callable[[np.ndarray, np.random.Generator, int], np.ndarray]] = {
    "fog": add_fog,
    "haze": add_haze,
    "rain": add_rain,
    "lowlight": add_lowlight,
}


def degrade(img: np.ndarray, kind: str, rng: np.random.Generator, severity: int = 3) -> np.ndarray:
    """Apply the degradation ``kind`` (a key of :data:`DEGRADATIONS`) at ``severity`` 1-5."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}.")
    return DEGRADATIONS[kind](img, rng, severity)


def _normalise(values: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] by the min and max (a constant array becomes zeros)."""
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)
