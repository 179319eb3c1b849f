import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax.readout import LINEAR_FEATURES, PAPER_FEATURES, Readout


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
