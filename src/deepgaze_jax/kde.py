"""The Gaussian KDE on a pixel grid shared by the centre bias, the gold standard and the metrics.

A histogram of fixations blurred by a separable Gaussian with *reflecting* boundaries, so
no probability mass leaves the image: `kde_grid` builds the (H, W) density from the
`blur_matrix` kernels; `relative_cells` bins relative coordinates onto a grid.
`ImagePairs` evaluates the same sums at the points themselves without building a grid:
it holds every pair of points on the same image once, so the leave-one-out fits, which
evaluate each image's own KDE at its own points for a dozen bandwidths, cost two
gathers and a sum per bandwidth (not a Python loop over the images).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np
import scipy.ndimage


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    matrix = scipy.ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode="reflect", truncate=4.0)
    matrix.setflags(write=False)
    return matrix


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) float64 matrix of a 1-D Gaussian blur with std ``sigma`` cells, reflecting boundaries.

    Column ``q`` is the blurred unit impulse at cell ``q`` (sums to 1), so ``M @ h`` blurs a
    histogram ``h`` along its first axis. Cached and read-only.
    """
    return _blur_matrix(int(n), float(sigma))


def relative_cells(relative: np.ndarray, n: int) -> np.ndarray:
    """Cell indices (int64) of relative coordinates in [0, 1) on a grid of ``n`` cells."""
    return np.minimum(np.floor(np.asarray(relative) * n).astype(np.int64), n - 1)


def kde_grid(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """Gaussian KDE of points on an (H, W) grid: (H, W) float64 probabilities summing to 1.

    The points (integer cell indices ``rows``, ``cols``, (n,) each, n >= 1) are histogrammed
    and blurred separably: ``K_rows @ hist @ K_cols.T`` with `blur_matrix` kernels (std in cells);
    for few points, the same sum as outer products ``K_rows[:, rows] @ K_cols[:, cols].T``.
    """
    k_rows, k_cols = blur_matrix(shape[0], sigma_rows), blur_matrix(shape[1], sigma_cols)
    if len(rows) < min(shape):
        return k_rows[:, rows] @ k_cols[:, cols].T / len(rows)
    hist = np.zeros(shape, dtype=np.float64)
    np.add.at(hist, (rows, cols), 1.0)
    return k_rows @ hist @ k_cols.T / len(rows)


@dataclasses.dataclass(frozen=True)
class ImagePairs:
    """Every ordered pair (a, b) of points on the same image (a == b included), on one (H, W) grid.

    Attributes:
      a, b: (P,) int32 indices (into the caller's points) of the point whose KDE is evaluated and
        of the point that contributes to it.
      rows, cols: (P,) int32 flat indices ``row_a * H + row_b`` and ``col_a * W + col_b`` into the
        (H, H) and (W, W) `blur_matrix` kernels.
      shape: the grid's (H, W).
    """

    a: np.ndarray
    b: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]

    def kernel(self, sigma_rows: float, sigma_cols: float) -> np.ndarray:
        """(P,) float64 mass that point b puts on point a's cell in `kde_grid` (before dividing by the
        number of points), for blur stds ``sigma_rows``, ``sigma_cols`` in cells."""
        height, width = self.shape
        return blur_matrix(height, sigma_rows).ravel()[self.rows] * blur_matrix(width, sigma_cols).ravel()[self.cols]

    def sums(self, values: np.ndarray, num_points: int) -> np.ndarray:
        """(num_points,) sum over b of the (P,) pair ``values``, for each point a (0 for points in no pair)."""
        return np.bincount(self.a, weights=values, minlength=num_points)


def image_pairs(images: Sequence[np.ndarray], rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> ImagePairs:
    """`ImagePairs` of the points ``images`` (one index array per image, all on an ``shape`` grid),
    with ``rows``, ``cols`` the cell indices of every point."""
    a = np.concatenate([np.repeat(idx, len(idx)) for idx in images]).astype(np.int32)
    b = np.concatenate([np.tile(idx, len(idx)) for idx in images]).astype(np.int32)
    flat = lambda cells, n: (cells[a] * n + cells[b]).astype(np.int32)  # noqa: E731
    return ImagePairs(a, b, flat(rows, shape[0]), flat(cols, shape[1]), shape)
