"""The Gaussian KDE on a pixel grid shared by the centre bias, the gold standard and the metrics.

A histogram of fixations blurred by a separable Gaussian with *reflecting* boundaries, so
no probability mass leaves the image: `kde_grid` builds the (H, W) density, `kernel_pairs`
evaluates the same sum at a few cells without building it (leave-one-out fits), from the
`blur_matrix` kernels; `relative_cells` bins relative coordinates onto a grid.
"""

from __future__ import annotations

import functools

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


def kernel_pairs(k_rows: np.ndarray, k_cols: np.ndarray, rows_a, cols_a, rows_b, cols_b) -> np.ndarray:
    """(A, B) kernel values: the mass that a point at cell ``b`` puts on cell ``a`` in `kde_grid`.

    ``k_rows``, ``k_cols`` are the `blur_matrix` kernels of the grid; evaluating a KDE at a few
    cells this way is exact (the same numbers as the blurred grid) and needs no grid.
    """
    return k_rows[np.asarray(rows_a)[:, None], np.asarray(rows_b)[None, :]] * k_cols[
        np.asarray(cols_a)[:, None], np.asarray(cols_b)[None, :]
    ]
