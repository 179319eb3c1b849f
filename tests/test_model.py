import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax.model import (
    ModelConfig,
    centerbias_on_grid,
    init_params,
    load_model,
    log_density_grid,
    mixture,
    save_head,
    save_model,
)


@pytest.fixture
def config():
    return ModelConfig(backbone="fake")


def test_config_json_round_trip():
    cfg = ModelConfig(backbone="vgg19", taps=("conv5_1", "relu5_4"), readout_features=(1,), cell=8)
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_config_resolves_backbone_taps_and_strides(config):
    assert config.resolved_taps() == ("fine", "coarse")
    assert config.grid_stride() == 16 and config.num_channels() == 9


def test_log_density_grid_is_normalised(config):
    params = init_params(config, jax.random.PRNGKey(0))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3)), jnp.float32)
    log_cb = centerbias_on_grid(None, (16, 24))
    out = log_density_grid(params, images, jnp.broadcast_to(log_cb, (2, 16, 24)))
    assert out.shape == (2, 16, 24)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(out, axis=(1, 2))), 0.0, atol=1e-5)


def test_mixture_averages_in_probability_space(config):
    a = init_params(config, jax.random.PRNGKey(1))
    b = init_params(config, jax.random.PRNGKey(2), backbone_weights=a.backbone_weights)
    mix = mixture([a, b])
    assert mix.num_components == 2
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, 32, 64, 3)), jnp.float32)
    log_cb = centerbias_on_grid(None, (8, 16))[None]
    pa, pb, pm = (np.exp(np.asarray(log_density_grid(p, images, log_cb), np.float64)) for p in (a, b, mix))
    np.testing.assert_allclose(pm, (pa + pb) / 2, rtol=1e-4)


def test_centerbias_template_is_resized_and_normalised():
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    template = -((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 20
    grid = np.asarray(centerbias_on_grid(template, (24, 32)))
    assert grid.shape == (24, 32)
    np.testing.assert_allclose(np.log(np.exp(grid.astype(np.float64)).sum()), 0.0, atol=1e-5)
    assert grid[12, 16] > grid[0, 0]
    np.testing.assert_allclose(np.asarray(centerbias_on_grid(None, (4, 5))), -math.log(20), rtol=1e-6)


def test_save_load_round_trip(config, tmp_path):
    params = init_params(config, jax.random.PRNGKey(3), centerbias=np.zeros((8, 8), np.float32), num_components=3)
    save_model(params, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.config == params.config and loaded.num_components == 3
    for x, y in zip(jax.tree_util.tree_leaves(params.head), jax.tree_util.tree_leaves(loaded.head)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(loaded.centerbias), 0.0)


def test_truncated_or_foreign_model_files_are_refused(config, tmp_path):
    params = init_params(config, jax.random.PRNGKey(3))
    save_model(params, tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read model file"):
        load_model(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", meta=np.frombuffer(b'{"format": "x"}', np.uint8))
    with pytest.raises(ValueError, match="not a deepgaze-jax-model"):
        load_model(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


def test_mixture_refuses_different_configs(config):
    a = init_params(config, jax.random.PRNGKey(1))
    b = a.replace(config=ModelConfig(backbone="fake", readout_features=(1,)))
    with pytest.raises(ValueError, match="different configs"):
        mixture([a, b])


def test_save_head_writes_a_one_component_model(config, tmp_path):
    params = init_params(config, jax.random.PRNGKey(5))
    variables = jax.tree_util.tree_map(lambda x: x[0], params.head)
    template = np.zeros((8, 8), np.float32)
    save_head(config, variables, template, tmp_path / "one.npz")
    loaded = load_model(tmp_path / "one.npz")
    assert loaded.num_components == 1 and loaded.config == config
    np.testing.assert_array_equal(loaded.centerbias, template)
    for a, b in zip(jax.tree_util.tree_leaves(loaded.head), jax.tree_util.tree_leaves(params.head)):
        np.testing.assert_array_equal(a, b)

