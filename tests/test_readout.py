import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference_readout import iie_reference

from deepgaze_jax.readout import (
    IIE_FEATURES,
    LAYER_NORM_EPS,
    LINEAR_FEATURES,
    PAPER_FEATURES,
    READOUTS,
    Readout,
    ReadoutSpec,
    standardized_image_stats,
)


def test_paper_readout_has_16_32_2_1_layers():
    v = Readout(PAPER_FEATURES).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 7)))
    shapes = [v["params"][f"layer{i}"]["kernel"].shape for i in range(4)]
    assert shapes == [(7, 16), (16, 32), (32, 2), (2, 1)]


def test_dense_readout_equals_1x1_convolution():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 6, 7))
    readout = Readout(PAPER_FEATURES)
    v = readout.init(jax.random.PRNGKey(0), x)
    y = readout.apply(v, x)
    h = x
    for i in range(4):
        p = v["params"][f"layer{i}"]
        conv = nn.Conv(p["kernel"].shape[1], (1, 1))
        h = conv.apply({"params": {"kernel": p["kernel"][None, None], "bias": p["bias"]}}, h)
        h = nn.relu(h) if i < 3 else h
    np.testing.assert_allclose(np.asarray(y), np.asarray(h[..., 0]), rtol=1e-5, atol=1e-5)


def test_feature_standardisation_uses_stats_collection():
    x = jnp.full((1, 2, 2, 3), 10.0)
    readout = Readout(LINEAR_FEATURES)
    v = readout.init(jax.random.PRNGKey(0), x)
    v = {"params": v["params"], "stats": {"mean": jnp.full((3,), 10.0), "std": jnp.ones((3,))}}
    np.testing.assert_allclose(np.asarray(readout.apply(v, x)), float(v["params"]["layer0"]["bias"][0]), rtol=1e-6)


def test_readout_must_end_in_one_channel():
    with pytest.raises(ValueError, match="1 channel"):
        Readout((4, 2)).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)))


def _iie_variables(channels: int, key: int = 0):
    """IIE readout variables with random, non-trivial feature statistics."""
    readout = Readout(IIE_FEATURES, "iie")
    v = readout.init(jax.random.PRNGKey(key), jnp.zeros((1, 2, 2, channels)))
    k1, k2 = jax.random.split(jax.random.PRNGKey(key + 1))
    stats = {"mean": jax.random.normal(k1, (channels,)), "std": jnp.exp(jax.random.normal(k2, (channels,)))}
    return readout, {"params": v["params"], "stats": stats}


def test_iie_readout_has_8_16_1_layers_and_no_layer_norm_parameters():
    readout, v = _iie_variables(7)
    assert READOUTS["iie"] == ReadoutSpec("iie", (8, 16, 1))
    shapes = jax.tree_util.tree_map(jnp.shape, v["params"])
    assert shapes == {f"layer{i}": {"kernel": k, "bias": (k[1],)} for i, k in enumerate([(7, 8), (8, 16), (16, 1)])}


def test_iie_readout_equals_layer_norm_and_dense_reference():
    readout, v = _iie_variables(12)
    # channels of different offsets and scales, per image different levels
    x = 5.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(4), (3, 5, 6, 12)) * jnp.arange(1, 13)
    x = x * jnp.asarray([1.0, 0.1, 4.0])[:, None, None, None]
    np.testing.assert_allclose(np.asarray(jax.jit(readout.apply)(v, x)), np.asarray(jax.jit(iie_reference)(v, x)),
                               rtol=2e-5, atol=2e-5)


def test_iie_readout_is_per_image():
    """Each image is normalised by its own statistics: a batch gives each image's own result."""
    readout, v = _iie_variables(6)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 5, 6)) + jnp.asarray([0.0, 3.0])[:, None, None, None]
    apply = jax.jit(readout.apply)
    together = apply(v, x)
    alone = jnp.concatenate([apply(v, x[i : i + 1]) for i in range(2)])
    np.testing.assert_allclose(np.asarray(together), np.asarray(alone), rtol=1e-5, atol=1e-5)


def test_iie_first_layer_is_exact_for_channels_of_large_mean():
    """Two-pass moments: a channel of mean 1e4 and std 1 is normalised as well as a centred one (one pass,
    E[x^2] - E[x]^2, would lose the unit variance in the float32 rounding of 1e8)."""
    x = 1e4 + jax.random.normal(jax.random.PRNGKey(3), (1, 8, 8, 2))
    mean, std = jnp.asarray([1e4, 1e4]), jnp.ones(2)
    mu, sigma = standardized_image_stats(x, mean, std)
    z = np.asarray(x, np.float64) - 1e4
    np.testing.assert_allclose(float(mu[0]), z.mean(), atol=1e-5)  # not float32's resolution at 1e4 (1e-3)
    np.testing.assert_allclose(float(sigma[0]), np.sqrt(z.var() + LAYER_NORM_EPS), rtol=1e-4)


def test_iie_readout_under_vmap_over_parameters_with_a_shared_grid():
    """K models under vmap (batched_training's layout: parameters batched, the grid not) = each model alone."""
    readout = Readout(IIE_FEATURES, "iie")
    models = [_iie_variables(9, key)[1] for key in (0, 10, 20)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *models)
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 4, 6, 9)).astype(jnp.bfloat16)
    batched = jax.jit(jax.vmap(lambda v: readout.apply(v, x)))(stacked)
    apply = jax.jit(readout.apply)
    for k, v in enumerate(models):
        np.testing.assert_allclose(np.asarray(batched[k]), np.asarray(apply(v, x)), rtol=1e-5, atol=1e-5)
    reference = jax.jit(iie_reference)(models[1], x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(reference), rtol=0.05, atol=0.05)


def test_iie_readout_is_finite_on_an_all_zero_grid_with_finite_gradients():
    """Padding rows of a batch are all zero: their output and gradient must stay finite."""
    readout, v = _iie_variables(5)
    x = jnp.zeros((2, 3, 3, 5))
    grad = jax.jit(jax.grad(lambda p: jnp.sum(readout.apply({"params": p, "stats": v["stats"]}, x))))(v["params"])
    assert np.all(np.isfinite(np.asarray(jax.jit(readout.apply)(v, x))))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grad))


def test_unknown_readout_kind_is_refused():
    with pytest.raises(ValueError, match="unknown readout kind 'iie2'"):
        Readout(IIE_FEATURES, "iie2").init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)))


@pytest.mark.parametrize("spec", ["paper", "iie"])
def test_a_channel_constant_in_training_is_left_out(spec):
    """Its std is floored at 1e-6 by the statistics: unignored, its bfloat16 rounding (or any value it takes
    on an unseen image) would be multiplied by 1e6. Left out, it changes nothing, in float32 or bfloat16."""
    readout = Readout(READOUTS[spec].features, READOUTS[spec].kind)
    x = jax.random.normal(jax.random.PRNGKey(6), (2, 4, 5, 6)).at[..., 2].set(0.4)
    v = readout.init(jax.random.PRNGKey(0), x)
    v = {"params": v["params"], "stats": {"mean": jnp.full((6,), 0.4).at[:2].set(0.0), "std": jnp.ones(6).at[2].set(1e-6)}}
    expected = readout.apply(v, x)
    unseen = readout.apply(v, x.at[0, 1, 1, 2].set(3.0))
    np.testing.assert_allclose(np.asarray(unseen), np.asarray(expected), rtol=1e-6, atol=1e-6)
    low = readout.apply(v, x.astype(jnp.bfloat16))
    np.testing.assert_allclose(np.asarray(low), np.asarray(expected), rtol=0.05, atol=0.05)
    assert float(jnp.max(jnp.abs(expected))) > 0.1
