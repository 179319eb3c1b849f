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


def test_kde_grid_sums_to_one_and_image_pairs_give_each_images_own_kde_at_its_points():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 12, 9), rng.integers(0, 20, 9)
    images = [np.array([0, 3, 4]), np.array([1]), np.array([2, 5, 6, 7, 8])]
    pairs = kde.image_pairs(images, rows, cols, (12, 20))
    assert len(pairs.a) == 9 + 1 + 25
    at_points = pairs.sums(pairs.kernel(2.0, 3.0), 10)
    assert at_points[9] == 0  # a point in no image
    for idx in images:
        grid = kde.kde_grid(rows[idx], cols[idx], (12, 20), 2.0, 3.0)
        assert grid.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(at_points[idx] / len(idx), grid[rows[idx], cols[idx]], rtol=1e-12)
