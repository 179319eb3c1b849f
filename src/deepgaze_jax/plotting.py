"""Pictures as in the paper: equal-mass contours (fig. 5), model samples (fig. 6), IG scatter (fig. 4).

The paper draws a density as contour lines that split the image into regions of
equal probability mass: the pixels above the first level hold 25% of the mass,
above the second 50%, above the third 75% (`equal_mass_levels`).

``draw_*`` functions paint onto a Matplotlib axes; ``*_figure`` functions build a
`matplotlib.figure.Figure` without pyplot (no global state, no GUI backend);
`save_png` / `render_png` write one out. Matplotlib is imported only when a figure is built.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import jax
import numpy as np

from deepgaze_jax.predict import sample_fixations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

QUARTILES = (0.25, 0.5, 0.75)
CONTOUR_COLORS = ("#ffffff", "#ffd54f", "#ff7043")  # outermost (75% mass) to innermost (25%)
FIXATION_COLOR = "#00e5ff"
DPI = 100
PANEL_INCHES = 5.0
CONTOUR_SMOOTHING = 1 / 256  # Gaussian sigma for tracing contours, as a fraction of the longer side


def equal_mass_levels(log_density: np.ndarray, masses: Sequence[float] = QUARTILES) -> np.ndarray:
    """Log-density thresholds t_k such that the pixels with log p >= t_k hold mass ``masses[k]``.

    Returns an array of len(masses) thresholds, decreasing as the mass grows.
    """
    masses = np.asarray(masses, np.float64)
    if np.any((masses <= 0) | (masses >= 1)):
        raise ValueError(f"masses must lie in (0, 1), got {masses.tolist()}")
    values = np.sort(np.asarray(log_density, np.float64).ravel())[::-1]
    cumulative = np.cumsum(np.exp(values - values.max()))
    cumulative /= cumulative[-1]
    return values[np.minimum(np.searchsorted(cumulative, masses), values.size - 1)]


def expected_fixations_per_region(log_density: np.ndarray, masks: dict[str, np.ndarray], n: int) -> dict[str, float]:
    """Expected number of the next ``n`` fixations that land in each (H, W) boolean region mask."""
    p = np.exp(np.asarray(log_density, np.float64))
    return {name: float(n * p[np.asarray(mask, bool)].sum()) for name, mask in masks.items()}


def explained_fraction(model_ig: np.ndarray, gold_ig: np.ndarray) -> float:
    """Mean model information gain over mean gold-standard information gain (paper, fig. 4)."""
    return float(np.mean(model_ig) / np.mean(gold_ig))


def _line_width(ax) -> float:
    """Line width in points: 0.3% of the axes' longer side as drawn, at least 2 pixels."""
    bbox = ax.get_window_extent()
    drawn_px = max(bbox.width, bbox.height)
    return max(2.0, 0.003 * drawn_px) * 72.0 / ax.figure.dpi


def _show_image(ax, image: np.ndarray, title: str | None) -> None:
    ax.imshow(image, interpolation="antialiased")
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def draw_density(ax, image: np.ndarray, log_density: np.ndarray, fixations=None, title: str | None = None) -> None:
    """Image with the density as a heat map and equal-mass contour lines (paper fig. 5).

    The heat map's opacity grows with the density above its minimum, so low-density parts
    of the image, and all of it under a uniform density, stay visible. The contours are
    traced on the log density smoothed by a Gaussian of `CONTOUR_SMOOTHING` times the
    longer side (which hides the staircase of a density computed on coarse cells); their
    levels are those of the unsmoothed density. ``fixations``: optional (x, y) arrays
    drawn as dots.
    """
    from matplotlib import colormaps, patheffects
    from scipy.ndimage import gaussian_filter

    h, w = image.shape[:2]
    log_density = np.asarray(log_density, np.float64)
    if log_density.shape != (h, w):
        raise ValueError(f"log density of shape {log_density.shape} for an image of {h}x{w} pixels")
    relative = np.exp(log_density - log_density.max())
    heat = colormaps["magma"](relative)
    heat[..., 3] = 0.6 * (relative - relative.min())
    _show_image(ax, image, title)
    ax.imshow(heat, extent=(0, w, h, 0), interpolation="bilinear")
    levels = np.unique(equal_mass_levels(log_density))
    levels = levels[levels > log_density.min()]  # a level at the minimum encloses everything: no line
    if levels.size:
        width = _line_width(ax)
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        smooth = gaussian_filter(log_density, CONTOUR_SMOOTHING * max(h, w), mode="nearest")
        contours = ax.contour(xx, yy, smooth, levels=levels, colors=CONTOUR_COLORS[-levels.size :], linewidths=width)
        contours.set_path_effects([patheffects.withStroke(linewidth=2.2 * width, foreground="black", alpha=0.5)])
    if fixations is not None:
        _scatter_fixations(ax, fixations)


def draw_fixations(ax, image: np.ndarray, fixations, title: str | None = None) -> None:
    """Image with fixations ``(x, y)`` (pixel coordinates) as dots."""
    _show_image(ax, image, title)
    _scatter_fixations(ax, fixations)


def _scatter_fixations(ax, fixations) -> None:
    x, y = (np.asarray(v, np.float64) for v in fixations)
    width = _line_width(ax)
    ax.scatter(x, y, s=(3.5 * width) ** 2, c=FIXATION_COLOR, edgecolors="black", linewidths=0.3 * width)


def _figure(width_inches: float, height_inches: float, **kwargs) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(width_inches, height_inches), dpi=DPI, **kwargs)


def overlay_figure(image: np.ndarray, log_density: np.ndarray, fixations=None) -> "Figure":
    """`draw_density` filling a figure of exactly the image's pixel size."""
    h, w = image.shape[:2]
    fig = _figure(w / DPI, h / DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_density(ax, image, log_density, fixations)
    return fig


def samples_figure(image: np.ndarray, log_density: np.ndarray, fixations, key: jax.Array) -> "Figure":
    """Two panels (paper fig. 6): as many fixations sampled from the model as there are human ones, and those."""
    x, y = (np.asarray(v, np.float64) for v in fixations)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fixations must be (x, y) arrays of one shape (N,), got {x.shape} and {y.shape}")
    samples = sample_fixations(log_density, x.size, key)
    h, w = image.shape[:2]
    fig = _figure(2 * PANEL_INCHES, PANEL_INCHES * h / w + 0.6, layout="constrained")
    model_ax, human_ax = fig.subplots(1, 2)
    draw_fixations(model_ax, image, samples, f"model samples (n={x.size})")
    draw_fixations(human_ax, image, (x, y), f"human fixations (n={x.size})")
    return fig


def ig_scatter_figure(model_ig: np.ndarray, gold_ig: np.ndarray) -> "Figure":
    """Per-image information gain, model against gold standard, with the diagonal (paper fig. 4)."""
    model_ig, gold_ig = np.asarray(model_ig, np.float64), np.asarray(gold_ig, np.float64)
    if model_ig.shape != gold_ig.shape or model_ig.ndim != 1 or model_ig.size == 0:
        raise ValueError(f"need two (I,) arrays of one shape, got {model_ig.shape} and {gold_ig.shape}")
    if not (np.all(np.isfinite(model_ig)) and np.all(np.isfinite(gold_ig))):
        raise ValueError("information gains contain NaN or inf")
    if np.mean(gold_ig) <= 0:
        raise ValueError(f"mean gold-standard information gain must be positive, got {np.mean(gold_ig):.3g}")
    fig = _figure(PANEL_INCHES, PANEL_INCHES, layout="constrained")
    ax = fig.subplots()
    ax.scatter(gold_ig, model_ig, s=10, alpha=0.6, edgecolors="none")
    low = min(0.0, model_ig.min(), gold_ig.min())
    high = max(model_ig.max(), gold_ig.max())
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.4", linewidth=1, linestyle="--")
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("gold standard information gain (bits/fixation)")
    ax.set_ylabel("model information gain (bits/fixation)")
    fraction = explained_fraction(model_ig, gold_ig)
    ax.set_title(f"{100 * fraction:.1f}% of the information gain explained ({model_ig.size} images)", fontsize=10)
    return fig


def render_png(fig: "Figure") -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(fig: "Figure", path: str | Path) -> Path:
    """Writes the figure to a PNG at ``path``."""
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def save_overlay(image: np.ndarray, log_density: np.ndarray, path: str | Path, fixations=None) -> Path:
    """Writes `overlay_figure` of one image to a PNG at ``path`` (the image's own pixel size)."""
    return save_png(overlay_figure(image, log_density, fixations), path)


def plot_samples(image: np.ndarray, log_density: np.ndarray, fixations_xy, key: jax.Array, path: str | Path) -> Path:
    """Writes `samples_figure` (model samples beside the human fixations ``(x, y)``) to a PNG."""
    return save_png(samples_figure(image, log_density, fixations_xy, key), path)


def plot_ig_scatter(model_ig: np.ndarray, gold_ig: np.ndarray, path: str | Path) -> Path:
    """Writes `ig_scatter_figure` of per-image IGs (bits/fixation) to a PNG."""
    return save_png(ig_scatter_figure(model_ig, gold_ig), path)
