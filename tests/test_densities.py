"""Log-density helpers: normalisation, averaging, resizing."""

import numpy as np
import pytest
from scipy.special import logsumexp

from deepgaze_jax.centerbias import CenterBias
from deepgaze_jax.densities import log_mean_density, log_normalize, resize_log_density
from deepgaze_jax.serve import fit_size


def test_log_normalize():
    out = log_normalize(np.array([[1.0, 2.0], [3.0, -1e3]]))
    assert logsumexp(out) == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.isfinite(out))


def test_log_mean_density_averages_probabilities():
    p1 = np.array([[0.5, 0.5], [0.0 + 1e-300, 0.0 + 1e-300]])
    p2 = np.array([[0.25, 0.25], [0.25, 0.25]])
    out = log_mean_density([np.log(p1), np.log(p2)])
    np.testing.assert_allclose(np.exp(out), (p1 + p2) / 2, atol=1e-12)
    single = log_mean_density([np.log(p2)], dtype=np.float32)
    assert single.dtype == np.float32 and np.allclose(single, np.log(p2))
    extreme = log_mean_density([np.array([0.0, -1e4]), np.array([-1e4, -1e4])])
    assert np.all(np.isfinite(extreme)) and np.isclose(np.logaddexp.reduce(extreme), 0.0)
    with pytest.raises(ValueError, match="at least one"):
        log_mean_density([])
    with pytest.raises(ValueError, match="different shapes"):
        log_mean_density([np.zeros((2, 2)), np.zeros((2, 3))])


def test_resize_log_density():
    model = CenterBias(x=np.array([0.25], np.float32), y=np.array([0.5], np.float32), bandwidth=0.1, uniform_weight=0.01)
    resized = resize_log_density(model.template(), (384, 512))
    assert resized.shape == (384, 512) and resized.dtype == np.float32
    assert logsumexp(resized.astype(np.float64)) == pytest.approx(0.0, abs=1e-5)
    # Resizing the template agrees with evaluating the model at that size, up to the
    # template's binning (1/256 of the image): total variation distance below 1%.
    p, q = np.exp(resized.astype(np.float64)), np.exp(model.log_density(384, 512).astype(np.float64))
    assert 0.5 * np.abs(p - q).sum() < 0.01


def test_downsample_is_normalised_where_the_density_underflows():
    log_density = np.full((40, 60), -200.0, np.float32)
    log_density[0, 0] = 0.0
    small = resize_log_density(log_density, fit_size(log_density.shape, 7))
    assert small.shape == (5, 7) and np.all(np.isfinite(small))
    assert abs(logsumexp(small)) < 1e-6


def test_resize_sums_mass_along_shrinking_axes_and_interpolates_the_log_along_growing_ones():
    log_density = log_normalize(np.random.default_rng(0).normal(size=(8, 12)), np.float32)
    small = resize_log_density(log_density, (4, 3))
    blocks = np.exp(log_density.astype(np.float64)).reshape(4, 2, 3, 4).sum(axis=(1, 3))
    np.testing.assert_allclose(np.exp(small.astype(np.float64)), blocks, rtol=1e-5)
    # rows shrink, columns grow: log p linear in the column stays linear, with half the slope per new column
    rows, cols = np.mgrid[0:8, 0:12]
    linear = log_normalize(np.sin(rows) + 0.1 * cols, np.float32)
    mixed = resize_log_density(linear, (4, 24))
    assert mixed.shape == (4, 24) and abs(logsumexp(mixed.astype(np.float64))) < 1e-5
    np.testing.assert_allclose(np.diff(mixed[:, 1:-1], axis=1), 0.05, atol=1e-5)
    np.testing.assert_allclose(resize_log_density(linear, (8, 12)), linear, atol=1e-6)
