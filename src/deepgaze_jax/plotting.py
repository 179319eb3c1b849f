"""Pictures of densities as in the paper (figures 5 and 6): equal-mass contours and overlays.

The paper draws a density as contour lines that split the image into regions of
equal probability mass: the pixels above the first level hold 25% of the mass,
above the second 50%, above the third 75% (`equal_mass_levels`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

QUARTILES = (0.25, 0.5, 0.75)


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


def draw_density(ax, image: np.ndarray, log_density: np.ndarray, fixations=None, title: str | None = None):
    """Image with the density as a translucent heat map and equal-mass contour lines (paper fig. 5).

    ``fixations``: optional (x, y) arrays drawn as dots.
    """
    ax.imshow(image)
    density = np.exp(log_density - log_density.max())
    ax.imshow(density, cmap="magma", alpha=0.45, extent=(0, image.shape[1], image.shape[0], 0))
    levels = np.sort(equal_mass_levels(log_density))
    yy, xx = np.mgrid[0 : log_density.shape[0], 0 : log_density.shape[1]] + 0.5
    ax.contour(xx, yy, log_density, levels=levels, colors=["#ffffff", "#ffd54f", "#ff7043"], linewidths=1.2)
    if fixations is not None:
        ax.scatter(fixations[0], fixations[1], s=6, c="#00e5ff", edgecolors="none")
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def save_overlay(image: np.ndarray, log_density: np.ndarray, path: str | Path, fixations=None) -> Path:
    """Writes `draw_density` of one image to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * h / w), dpi=max(100, int(w / 6)))
    fig.subplots_adjust(0, 0, 1, 1)
    draw_density(ax, image, log_density, fixations)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
