"""Centre bias: normalisation, honest leave-one-image-out, fitting on synthetic data, I/O."""

import numpy as np
import pytest
from scipy.special import logsumexp

from deepgaze_jax import centerbias
from deepgaze_jax.data.fixations import Fixations


def gaussian_fixations(seed=0, images=100, per_image=30, std=0.12, sizes=((60, 80), (80, 60))):
    """Fixations with relative coordinates ~ N(0.5, std^2) on images alternating between ``sizes``."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.arange(images), per_image)
    image_sizes = np.array([sizes[i % len(sizes)] for i in range(images)])
    rel = np.clip(rng.normal(0.5, std, (2, n.size)), 0, 0.999)
    fixations, _ = Fixations.create(rel[0] * image_sizes[n, 1], rel[1] * image_sizes[n, 0], n, image_sizes)
    return fixations


def test_log_density_is_normalised():
    model = centerbias.CenterBias(
        x=np.array([0.5, 0.5, 0.2], np.float32), y=np.array([0.5, 0.5, 0.9], np.float32), bandwidth=0.05, uniform_weight=0.1
    )
    for shape in [(48, 64), (1, 1), (7, 3)]:
        log_density = model.log_density(*shape)
        assert log_density.shape == shape and log_density.dtype == np.float32
        assert np.all(np.isfinite(log_density))
        assert logsumexp(log_density.astype(np.float64)) == pytest.approx(0.0, abs=1e-5)
    template = model.template()
    assert template.shape == (256, 256)
    # The peak is where most fixations are.
    assert np.unravel_index(np.argmax(model.log_density(40, 40)), (40, 40)) == (20, 20)


def test_fit_recovers_gaussian_bandwidth():
    fixations = gaussian_fixations()
    model = centerbias.fit_center_bias(fixations)
    # The likelihood-crossvalidated KDE bandwidth of a Gaussian sample is of the order of
    # Scott's rule std * N^(-1/6) (0.025 here).
    scott = 0.12 * len(fixations) ** (-1 / 6)
    assert scott / 2 < model.bandwidth < scott * 2.5
    assert 0 < model.uniform_weight < 0.05  # the data has no uniform component


def test_fit_mixture_weights_recovers_known_weights():
    rng = np.random.default_rng(0)
    # Components: N(0, 1) and uniform on [-5, 5]; 30% of the samples from the uniform.
    n = 20000
    from_uniform = rng.random(n) < 0.3
    samples = np.where(from_uniform, rng.uniform(-5, 5, n), rng.normal(0, 1, n))
    log_components = np.stack([-0.5 * samples**2 - 0.5 * np.log(2 * np.pi), np.full(n, -np.log(10))], axis=1)
    weights, mean_ll = centerbias.fit_mixture_weights(log_components)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1] == pytest.approx(0.3, abs=0.02)
    assert mean_ll == pytest.approx(np.mean(np.logaddexp(*(log_components + np.log(weights)).T)))


def test_leave_one_image_out_is_the_centre_bias_of_the_other_images():
    fixations = gaussian_fixations(images=6, per_image=12)
    bandwidth, weight = 0.07, 0.2
    loo = centerbias.leave_one_image_out(fixations, bandwidth, weight)
    maps = centerbias.leave_one_image_out_maps(fixations, bandwidth, weight)
    rows, cols = fixations.pixel_indices()
    rx, ry = fixations.relative()
    for i in range(fixations.num_images):
        own = fixations.n == i
        others = centerbias.CenterBias(x=rx[~own], y=ry[~own], bandwidth=bandwidth, uniform_weight=weight)
        expected = others.log_density(*fixations.image_sizes[i])
        np.testing.assert_allclose(maps(i), expected, atol=1e-5)
        np.testing.assert_allclose(loo[own], expected[rows[own], cols[own]], atol=1e-5)


def test_leave_one_image_out_beats_uniform_and_is_honest():
    fixations = gaussian_fixations(seed=1)
    model = centerbias.fit_center_bias(fixations)
    loo = centerbias.leave_one_image_out(fixations, model.bandwidth, model.uniform_weight)
    uniform = -np.log(np.prod(fixations.image_sizes[fixations.n], axis=1))
    assert loo.mean() > uniform.mean()
    # Scoring the fixations under the model that includes them is optimistic.
    rows, cols = fixations.pixel_indices()
    in_sample = np.array([model.log_density(*fixations.image_sizes[n])[r, c] for n, r, c in zip(fixations.n, rows, cols)])
    assert in_sample.mean() > loo.mean()


def test_save_load_roundtrip(tmp_path):
    model = centerbias.fit_center_bias(gaussian_fixations(images=10, per_image=10))
    model.save(tmp_path / "cb.npz")
    loaded = centerbias.CenterBias.load(tmp_path / "cb.npz")
    assert loaded.bandwidth == model.bandwidth and loaded.uniform_weight == model.uniform_weight
    np.testing.assert_array_equal(loaded.x, model.x)
    np.testing.assert_array_equal(loaded.log_density(30, 40), model.log_density(30, 40))
