import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from deepgaze_jax.finalizer import Finalizer, blur, blur_matrix, expand_to_pixels, gaussian_kernel, resize_matrix, upsample_and_blur


def test_gaussian_kernel_is_normalised_and_symmetric():
    k = np.asarray(gaussian_kernel(jnp.float32(2.5), 9))
    assert k.shape == (19,)
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(k, k[::-1], rtol=1e-6)


def test_blur_matches_scipy_nearest_mode():
    x = np.random.default_rng(0).random((2, 24, 32)).astype(np.float32)
    ours = np.asarray(blur(jnp.asarray(x), jnp.float32(1.7), 11))
    for b in range(2):
        ref = gaussian_filter(x[b].astype(np.float64), 1.7, mode="nearest", truncate=11 / 1.7)
        np.testing.assert_allclose(ours[b], ref, atol=2e-6)


def test_blur_matrix_rows_sum_to_one_and_constant_maps_stay_constant():
    m = np.asarray(blur_matrix(7, jnp.float32(3.0), 10))
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(blur(jnp.full((1, 7, 5), 3.0), jnp.float32(3.0), 10)), 3.0, rtol=1e-6)


@pytest.mark.parametrize("size, radius", [(1, 3), (2, 3), (5, 2), (7, 10), (24, 48), (96, 48)])
def test_blur_matrix_equals_the_taps_placed_one_by_one(size, radius):
    """Each tap k of row i lands on column clip(i + k - radius) (edge replication), added one by one."""
    sigma = jnp.float32(radius / 2.5)
    kernel = np.asarray(gaussian_kernel(sigma, radius), np.float64)
    expected = np.zeros((size, size))
    for i in range(size):
        for k in range(2 * radius + 1):
            expected[i, min(max(i + k - radius, 0), size - 1)] += kernel[k]
    np.testing.assert_allclose(np.asarray(blur_matrix(size, sigma, radius)), expected, atol=2e-7)


def test_sigma_gradient_is_finite_and_nonzero():
    x = jnp.asarray(np.random.default_rng(1).random((1, 16, 16)), jnp.float32)
    g = jax.grad(lambda s: blur(x, s, 8)[0, 3, 4])(jnp.float32(2.0))
    assert np.isfinite(g) and g != 0


def test_expand_to_pixels_is_exactly_normalised():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)), jnp.float32)
    log_p = logits - jax.nn.logsumexp(logits)
    up = expand_to_pixels(log_p, 4)
    assert up.shape == (12, 20)
    np.testing.assert_allclose(float(jax.nn.logsumexp(up)), 0.0, atol=1e-5)
    np.testing.assert_allclose(float(up[5, 9]), float(log_p[1, 2]) - 2 * math.log(4), rtol=1e-6)


def test_finalizer_output_is_normalised_and_finite_for_extreme_inputs():
    fin = Finalizer(cell=4)
    cb = jnp.zeros((1, 12, 16)) - math.log(12 * 16)
    v = fin.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 16)), cb)
    for sal in (jnp.zeros((1, 12, 16)), jnp.full((1, 12, 16), 1e4), jnp.full((1, 12, 16), -1e4).at[0, 3, 3].set(1e4)):
        out = fin.apply(v, sal, cb)
        assert np.all(np.isfinite(np.asarray(out)))
        np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(out, axis=(1, 2))), 0.0, atol=1e-4)


def test_centre_bias_weight_one_adds_the_prior():
    fin = Finalizer(cell=4)
    rng = np.random.default_rng(3)
    cb = jnp.asarray(rng.normal(size=(1, 6, 8)), jnp.float32)
    v = fin.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 8)), cb)
    out = fin.apply(v, jnp.zeros((1, 6, 8)), cb)  # constant saliency stays constant after the blur
    np.testing.assert_allclose(np.asarray(out), np.asarray(cb - jax.nn.logsumexp(cb)), atol=1e-5)


def test_upsample_and_blur_is_resize_then_blur():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 8))
    sigma = jnp.float32(2.5)
    resized = jax.image.resize(x, (2, 24, 32), "linear")
    np.testing.assert_allclose(np.asarray(upsample_and_blur(x, (24, 32), sigma, 12)),
                               np.asarray(blur(resized, sigma, 12)), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(resize_matrix(7, 7)), np.eye(7, dtype=np.float32))
