import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import prepared_head
from deepgaze_jax.model import ModelConfig, SaliencyHead, init_head
from deepgaze_jax.readout import IIE_FEATURES, PAPER_FEATURES

CHANNELS = ModelConfig(taps=("stage5",)).num_channels()


def _head(config, components, seed):
    """Random variables (stats too, one channel constant) of a ``components``-component mixture."""
    head = init_head(config, jax.random.PRNGKey(seed), components)
    rng = np.random.default_rng(seed)
    std = rng.uniform(0.5, 2.0, (components, CHANNELS)).astype(np.float32)
    std[:, 3] = 0.0
    stats = {"readout": {"mean": jnp.asarray(rng.normal(size=(components, CHANNELS)), jnp.float32),
                         "std": jnp.asarray(std)}}
    finalizer = {"log_sigma": jnp.log(jnp.linspace(3.0, 20.0, components)),
                 "center_bias_weight": jnp.linspace(0.5, 1.5, components)}
    return {"params": {**head["params"], "finalizer": finalizer}, "stats": stats}


def _reference(config, head, grid, log_cb):
    """Each component by `model.SaliencyHead` (compiled once, then run per component), averaged in probability
    (float64)."""
    apply = jax.jit(SaliencyHead(config).apply)
    per = [np.asarray(apply(jax.tree_util.tree_map(lambda x: x[m], head), grid, log_cb), np.float64)
           for m in range(jax.tree_util.tree_leaves(head)[0].shape[0])]
    stack = np.stack(per)
    peak = stack.max(axis=0)
    return peak + np.log(np.exp(stack - peak).mean(axis=0))


@pytest.mark.parametrize("kind, features, cell, dtype", [
    ("deepgaze2", PAPER_FEATURES, 8, jnp.float32), ("iie", IIE_FEATURES, 8, jnp.float32), ("deepgaze2", (1,), 8, jnp.float32),
    ("deepgaze2", PAPER_FEATURES, 32, jnp.float32),  # density grid = feature grid: blur only
    ("deepgaze2", PAPER_FEATURES, 8, jnp.bfloat16), ("iie", IIE_FEATURES, 8, jnp.bfloat16)])
def test_prepared_head_equals_saliency_head_per_component(kind, features, cell, dtype):
    config = ModelConfig(taps=("stage5",), readout_features=features, readout_kind=kind, cell=cell)
    head = _head(config, 5, seed=len(features))
    rng = np.random.default_rng(1)
    grid = jnp.asarray(rng.normal(size=(2, 6, 8, CHANNELS)) * 3 + 1, dtype)
    density = (6 * 32 // cell, 8 * 32 // cell)  # the (6, 8) grid upsampled by 32 / cell (cell 32: not at all)
    log_cb = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, *density)), jnp.float32).reshape(2, -1)).reshape(2, *density)
    prepared = prepared_head.prepare_head(config, head, (6, 8), density)
    ours = np.asarray(prepared_head.prepared_log_density(config, prepared, grid, log_cb))
    np.testing.assert_allclose(ours, _reference(config, head, grid, log_cb), atol=2e-5)
    np.testing.assert_allclose(jax.nn.logsumexp(ours, axis=(1, 2)), 0.0, atol=1e-5)


def test_an_unknown_readout_kind_is_refused():
    config = ModelConfig(taps=("stage5",), readout_kind="IIE")
    head = _head(ModelConfig(taps=("stage5",)), 1, seed=0)
    with pytest.raises(ValueError, match="unknown readout kind 'IIE'"):
        prepared_head.prepared_log_density(config, prepared_head.prepare_head(config, head, (2, 2), (4, 4)),
                                           jnp.ones((1, 2, 2, CHANNELS)), jnp.zeros((1, 4, 4)))


def test_cached_prepare_keeps_a_head_per_shape_and_tells_heads_apart():
    config = ModelConfig(taps=("stage5",), readout_features=(4, 1))
    prepared_head.clear_cache()
    a, b = (_head(config, 2, seed) for seed in (0, 1))
    first = prepared_head.cached_prepare(config, a, (3, 4), (6, 8))
    assert prepared_head.cached_prepare(config, a, (3, 4), (6, 8)) is first
    other_shape = prepared_head.cached_prepare(config, a, (4, 3), (8, 6))
    other_head = prepared_head.cached_prepare(config, b, (3, 4), (6, 8))
    assert other_shape is not first and other_head is not first and prepared_head.cached_heads() == 3
    assert not np.allclose(other_head.kernel, first.kernel)
    numpy_head = jax.tree_util.tree_map(np.asarray, a)  # NumPy leaves can change in place: never cached
    np.testing.assert_array_equal(prepared_head.cached_prepare(config, numpy_head, (3, 4), (6, 8)).kernel, first.kernel)
    jax.jit(lambda h: prepared_head.cached_prepare(config, h, (3, 4), (6, 8)).kernel)(a)  # tracers: never cached
    assert prepared_head.cached_heads() == 3
    for seed in range(prepared_head.CACHE_SIZE + 2):
        prepared_head.cached_prepare(config, _head(config, 1, 10 + seed), (3, 4), (6, 8))
    assert prepared_head.cached_heads() == prepared_head.CACHE_SIZE
    prepared_head.clear_cache()
    assert prepared_head.cached_heads() == 0


def test_predict_density_prepares_each_member_once_per_working_size():
    import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
    import deepgaze_jax as dg

    prepared_head.clear_cache()
    members = [dg.init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(seed)) for seed in (0, 1)]
    ensemble = dg.Ensemble(tuple(members))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((96, 128, 3), (128, 96, 3), (96, 128, 3))]
    first = dg.predict_density(ensemble, images)
    assert prepared_head.cached_heads() == 4  # two members x two working sizes
    again = dg.predict_density(ensemble, images)
    assert prepared_head.cached_heads() == 4
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    prepared_head.clear_cache()
