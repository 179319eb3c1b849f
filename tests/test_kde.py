"""The grid KDE primitives."""

import numpy as np
import pytest

from deepgaze_jax import kde


@pytest.mark.parametrize("n, sigma", [(1, 2.0), (10, 0.2), (10, 3.0), (7, 40.0), (64, 5.5)])
def test_blur_matrix_preserves_mass(n, sigma):
    matrix = kde.blur_matrix(n, sigma)
    assert matrix.shape == (n, n)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, atol=1e-12)
    assert matrix.min() >= 0


def test_kde_grid_sums_to_one_and_matches_kernel_pairs():
    rows, cols = np.array([0, 5, 5, 11]), np.array([3, 0, 19, 7])
    grid = kde.kde_grid(rows, cols, (12, 20), 2.0, 3.0)
    assert grid.sum() == pytest.approx(1.0)
    at = kde.kernel_pairs(kde.blur_matrix(12, 2.0), kde.blur_matrix(20, 3.0), [4, 11], [6, 7], rows, cols)
    np.testing.assert_allclose(at.sum(axis=1) / len(rows), grid[[4, 11], [6, 7]], rtol=1e-12)
