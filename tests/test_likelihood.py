import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import likelihood as L
from deepgaze_jax import training as T
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.finalizer import expand_to_pixels
from deepgaze_jax.input_pipeline import ShapeGroup
from deepgaze_jax.model import SaliencyHead
from synthetic import CONFIG, TRAIN_IMAGES as TRAIN, training_data


@pytest.fixture(scope="module")
def data():
    return training_data()


def test_fixation_counts_bins_working_pixels_into_cells():
    fixations, _ = Fixations.create([0.0, 3.99, 4.0, 63.9, 10.0], [0.0, 0.0, 7.5, 47.9, 5.0], [0, 0, 0, 0, 1], [(48, 64), (48, 64)])
    counts = L.fixation_counts(fixations, [1, 0], (12, 16), 4)
    assert counts.shape == (2, 12, 16)
    assert counts[1, 0, 0] == 2 and counts[1, 1, 1] == 1 and counts[1, 11, 15] == 1
    assert counts[0, 1, 2] == 1 and counts.sum() == 5


def test_loss_is_mean_nll_vs_uniform_per_fixation(data):
    """The loss equals -mean over fixations of log p_pixel + log(h w), from the pixel-level density."""
    grids, log_cbs, fixations, stats, train, _ = data
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    loss = T.make_steps(CONFIG, T.TrainConfig()).loss(state.params, state.stats, train)
    lls = []
    for i in TRAIN:
        log_p = SaliencyHead(CONFIG).apply(
            state.head_variables(), jnp.asarray(grids[i], jnp.float32)[None], jnp.asarray(log_cbs[i])[None]
        )
        pixels = np.asarray(expand_to_pixels(log_p, CONFIG.cell))[0]
        on = fixations.n == i
        rows, cols = np.floor(fixations.y[on]).astype(int), np.floor(fixations.x[on]).astype(int)
        lls.append(pixels[rows, cols] + math.log(pixels.size))
    np.testing.assert_allclose(float(loss), -np.concatenate(lls).mean(), rtol=1e-5)


def test_uniform_head_has_zero_loss(data):
    *_, stats, train, _ = data
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    assert abs(float(T.make_steps(CONFIG, T.TrainConfig()).loss(zeros, stats, train))) < 1e-5


def test_padding_images_do_not_change_the_loss(data):
    grids, log_cbs, fixations, stats, train, _ = data
    steps = T.make_steps(CONFIG, T.TrainConfig())
    state = T.create_train_state(CONFIG, T.TrainConfig(), stats)
    padded = tuple(
        ShapeGroup(
            *(jnp.concatenate([a, jnp.ones_like(a[:3])]) for a in (g.grids, g.log_centerbias)),
            *(jnp.concatenate([a, jnp.zeros_like(a[:3])]) for a in (g.counts, g.valid)),
        )
        for g in train
    )
    np.testing.assert_allclose(steps.loss(state.params, stats, padded), steps.loss(state.params, stats, train), rtol=1e-6)


def test_weight_decay_penalises_only_readout_kernels(data):
    *_, stats, _, _ = data
    params = T.create_train_state(CONFIG, T.TrainConfig(), stats).params
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    kernels = sum(x.size for p, x in jax.tree_util.tree_leaves_with_path(params) if p[-1].key == "kernel")
    assert float(L.l2_norm_squared(ones)) == kernels == 6 * 4 + 4 * 1


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_log_likelihood_of_logits_equals_the_normalised_density_in_value_and_gradient(scale):
    """The written-out gradient agrees with autodiff through `finalizer.log_softmax_2d`, also for large logits."""
    from deepgaze_jax.finalizer import log_softmax_2d

    rng = np.random.default_rng(0)
    logits = jnp.asarray(scale * rng.standard_normal((3, 6, 8)), jnp.float32)
    counts = jnp.asarray(rng.poisson(0.3, (3, 6, 8)), jnp.float32)
    weights = jnp.asarray([1.0, -2.0, 0.5])
    direct = lambda z: jnp.sum(weights * L.log_likelihood_of_logits(z, counts))  # noqa: E731
    reference = lambda z: jnp.sum(weights * L.log_likelihood_per_image(log_softmax_2d(z), counts))  # noqa: E731
    value, grad = jax.value_and_grad(direct)(logits)
    expected_value, expected_grad = jax.value_and_grad(reference)(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected_grad), rtol=1e-5, atol=1e-5)
