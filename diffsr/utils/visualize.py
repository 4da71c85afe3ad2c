"""Figures for reports: side-by-side comparison grids (OpenCV) and line plots (matplotlib).

Grid images are H x W x 3 arrays, uint8 or float in [0, 1], in one channel order shared with
the ``color`` argument (OpenCV's BGR by default: red is ``(0, 0, 255)``); the result is uint8.
A box is ``(x, y, w, h)`` in pixels of the full-size image: left, top, width, height.

Line plots need matplotlib, an optional dependency (``pip install 'diffsr[plots]'``); it is
imported only when a plot is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "Box",
    "LineSeries",
    "PlotPanel",
    "comparison_grid",
    "draw_box",
    "label_bar",
    "save_line_plot",
    "stack_rows",
    "to_uint8_image",
    "zoom_crop",
]

Box = tuple[int, int, int, int]
RED_BGR = (0, 0, 255)
WHITE = 255


# ----------------------------------------------------------------------------- grid pieces
def to_uint8_image(img: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from uint8 or float [0, 1] input (grayscale is repeated to 3 channels)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W x 3 (or H x W) image, got shape {img.shape}.")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if np.issubdtype(img.dtype, np.floating):
        return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    raise ValueError(f"expected a uint8 or float [0, 1] image, got {img.dtype}.")


def _check_box(box: Sequence[int], height: int, width: int) -> Box:
    if len(box) != 4:
        raise ValueError(f"a box is x, y, w, h; got {tuple(box)}.")
    x, y, w, h = (int(v) for v in box)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(
            f"box x={x}, y={y}, w={w}, h={h} does not lie inside the {width} x {height} "
            f"image (x + w <= width, y + h <= height, all >= 0, w and h > 0)."
        )
    return x, y, w, h


def draw_box(
    img: np.ndarray, box: Sequence[int], color: Sequence[int] = RED_BGR, thickness: int = 2
) -> np.ndarray:
    """A copy of a uint8 image with the box outlined *inside* its edges.

    The outline covers the outermost ``thickness`` rows and columns of the box, so it stays
    visible at the image border.
    """
    out = to_uint8_image(img).copy()
    x, y, w, h = _check_box(box, out.shape[0], out.shape[1])
    t = max(1, min(thickness, w, h))
    colour = np.asarray(color, dtype=np.uint8)
    out[y : y + t, x : x + w] = colour
    out[y + h - t : y + h, x : x + w] = colour
    out[y : y + h, x : x + t] = colour
    out[y : y + h, x + w - t : x + w] = colour
    return out


def zoom_crop(img: np.ndarray, box: Sequence[int], zoom: float) -> np.ndarray:
    """The box's pixels enlarged ``zoom`` times with nearest-neighbour (pixels stay crisp)."""
    img = to_uint8_image(img)
    x, y, w, h = _check_box(box, img.shape[0], img.shape[1])
    if zoom <= 0:
        raise ValueError(f"zoom must be positive, got {zoom}.")
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    return cv2.resize(img[y : y + h, x : x + w], size, interpolation=cv2.INTER_NEAREST)


def label_bar(
    text: str, width: int, height: int, background: int = WHITE, color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """A ``height x width x 3`` uint8 strip with ``text`` centred, shrunk to fit if needed."""
    bar = np.full((height, width, 3), background, dtype=np.uint8)
    if not text:
        return bar
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = height / 40.0  # Hershey glyphs are about 22 px tall at scale 1
    thickness = max(1, round(height / 24))
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    if text_w > width - 4:
        scale *= (width - 4) / text_w
        (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((width - text_w) // 2, (height + text_h) // 2)
    cv2.putText(
        bar, text, origin, font, scale, tuple(int(c) for c in color), thickness, cv2.LINE_AA
    )
    return bar


# ----------------------------------------------------------------------------- grids
def comparison_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    box: Sequence[int] | None = None,
    zoom: float = 3.0,
    color: Sequence[int] = RED_BGR,
    gap: int = 4,
    label_height: int | None = None,
    thickness: int | None = None,
    display_width: int | None = None,
    background: int = WHITE,
) -> np.ndarray:
    """One row of a comparison figure: the images side by side, uint8 (H' x W' x 3).

    Each column, top to bottom: its label (if ``labels``), the full image with ``box``
    outlined, a ``gap``, and the box's region enlarged ``zoom`` times (framed in ``color``,
    centred; the zoom shrinks to fit the column when needed). Columns are ``gap`` apart.

    Args:
        images: same-size H x W x 3 images (e.g. input, without, with, ground truth).
        labels: one text per image, or None for no label strip.
        box: ``(x, y, w, h)`` of the zoomed region in full-size pixels; None: no zoom.
        label_height: strip height in pixels (default: 8 % of the column width, 18-48).
        thickness: box outline in pixels (default: about 0.5 % of the column width, >= 2).
        display_width: show full images at most this wide (resized, box scaled along);
            the zoom is still cut from the full-size pixels.
    """
    if not images:
        raise ValueError("comparison_grid needs at least one image.")
    columns = [to_uint8_image(img) for img in images]
    height, width = columns[0].shape[:2]
    for index, img in enumerate(columns):
        if img.shape[:2] != (height, width):
            raise ValueError(
                f"image {index} is {img.shape[1]} x {img.shape[0]} but image 0 is "
                f"{width} x {height}; all images of a row must have the same size."
            )
    if labels is not None and len(labels) != len(columns):
        raise ValueError(f"{len(labels)} labels for {len(columns)} images.")
    if box is not None:
        box = _check_box(box, height, width)

    scale = 1.0 if display_width is None or width <= display_width else display_width / width
    shown_w, shown_h = round(width * scale), round(height * scale)
    if label_height is None:
        label_height = int(np.clip(round(0.08 * shown_w), 18, 48))
    if thickness is None:
        thickness = max(2, round(0.005 * shown_w))

    panels = []
    for index, img in enumerate(columns):
        full = (
            img
            if scale == 1.0
            else cv2.resize(img, (shown_w, shown_h), interpolation=cv2.INTER_AREA)
        )
        parts = []
        if labels is not None:
            parts.append(label_bar(labels[index], shown_w, label_height, background))
        if box is None:
            parts.append(full)
        else:
            shown_box = _scaled_box(box, scale, shown_h, shown_w)
            parts.append(draw_box(full, shown_box, color, thickness))
            parts.append(np.full((gap, shown_w, 3), background, np.uint8))
            fitted_zoom = min(zoom, shown_w / box[2])
            enlarged = zoom_crop(img, box, fitted_zoom)
            enlarged = draw_box(
                enlarged, (0, 0, enlarged.shape[1], enlarged.shape[0]), color, thickness
            )
            parts.append(_pad_to_width(enlarged, shown_w, background))
        panels.append(np.concatenate(parts, axis=0))
    return _join(panels, axis=1, gap=gap, background=background)


def stack_rows(rows: Sequence[np.ndarray], gap: int = 4, background: int = WHITE) -> np.ndarray:
    """Stack grid rows vertically, ``gap`` apart; narrower rows are centred on the background."""
    if not rows:
        raise ValueError("stack_rows needs at least one row.")
    width = max(row.shape[1] for row in rows)
    return _join([_pad_to_width(row, width, background) for row in rows], 0, gap, background)


def _scaled_box(box: Box, scale: float, height: int, width: int) -> Box:
    if scale == 1.0:
        return box
    x, y = min(round(box[0] * scale), width - 1), min(round(box[1] * scale), height - 1)
    w = max(1, min(round(box[2] * scale), width - x))
    h = max(1, min(round(box[3] * scale), height - y))
    return x, y, w, h


def _pad_to_width(img: np.ndarray, width: int, background: int) -> np.ndarray:
    extra = width - img.shape[1]
    left = extra // 2
    return cv2.copyMakeBorder(
        img, 0, 0, left, extra - left, cv2.BORDER_CONSTANT, value=(background,) * 3
    )


def _join(parts: Sequence[np.ndarray], axis: int, gap: int, background: int) -> np.ndarray:
    """Concatenate along ``axis`` (0: rows, 1: columns) with ``gap``-pixel background strips."""
    pieces = []
    for index, part in enumerate(parts):
        if index and gap > 0:
            shape = (gap, part.shape[1], 3) if axis == 0 else (part.shape[0], gap, 3)
            pieces.append(np.full(shape, background, np.uint8))
        pieces.append(part)
    return np.concatenate(pieces, axis=axis)


# ----------------------------------------------------------------------------- line plots
@dataclass
class LineSeries:
    """One line: ``label`` (a leading ``_`` keeps it out of the legend), points ``x``, ``y``.

    ``color`` is any matplotlib colour (``"C0"``...); None takes the next of the cycle.
    """

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str | None = None
    alpha: float = 1.0
    marker: str | None = None
    linestyle: str = "-"
    linewidth: float = 1.5


@dataclass
class PlotPanel:
    """One set of axes: its lines, axis texts and scales, and labelled horizontal lines.

    ``xticks``: tick positions labelled with their plain values (e.g. the gammas of a sweep on
    a log axis), replacing the automatic ticks.
    """

    series: list[LineSeries]
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    logx: bool = False
    logy: bool = False
    hlines: list[tuple[str, float]] = field(default_factory=list)
    xticks: list[float] | None = None


def save_line_plot(
    path: str | os.PathLike,
    panels: Sequence[PlotPanel],
    size: tuple[int, int] = (800, 500),
    dpi: int = 100,
) -> None:
    """Draw the panels side by side and write a PNG of exactly ``size`` = (width, height) px."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit(
            "plots need matplotlib, which is not installed: pip install 'diffsr[plots]' "
            "(or pip install matplotlib)."
        ) from None
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_list, panels):
        for series in panel.series:
            axes.plot(
                series.x,
                series.y,
                label=series.label,
                color=series.color,
                alpha=series.alpha,
                marker=series.marker,
                linestyle=series.linestyle,
                linewidth=series.linewidth,
            )
        for index, (label, value) in enumerate(panel.hlines):
            axes.axhline(value, color="0.4", linestyle=("--", ":", "-.")[index % 3], label=label)
        if panel.logx:
            axes.set_xscale("log")
        if panel.logy:
            axes.set_yscale("log")
        if panel.xticks is not None:
            axes.set_xticks([], minor=True)
            axes.set_xticks(panel.xticks, labels=[f"{v:g}" for v in panel.xticks])
        axes.set_xlabel(panel.xlabel)
        axes.set_ylabel(panel.ylabel)
        if panel.title:
            axes.set_title(panel.title)
        axes.grid(True, alpha=0.3)
        if any(not s.label.startswith("_") for s in panel.series) or panel.hlines:
            axes.legend(fontsize="small")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
