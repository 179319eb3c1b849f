import io
import json
import math
import struct
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import model as model_module
from deepgaze_jax.model import (
    MODEL_FORMAT,
    DeepGazeParams,
    Ensemble,
    ModelConfig,
    centerbias_on_grid,
    ensemble,
    ensemble_members,
    init_params,
    load_model,
    log_density_grid,
    mixture,
    save_head,
    save_model,
)
from deepgaze_jax.model_io import ModelFileError


@pytest.fixture
def config():
    return ModelConfig(backbone="fake")


def test_config_json_round_trip():
    cfg = ModelConfig(backbone="vgg19", taps=("conv5_1", "relu5_4"), readout_features=(1,), cell=8)
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("readout", ["paper", "iie", "linear"])
def test_compiled_head_init_equals_the_flax_init_to_the_bit(readout):
    config = ModelConfig.for_readout("efficientnet_lite0", readout, taps=("stage5",))
    key = jax.random.PRNGKey(7)
    grid = jnp.zeros((1, 2, 2, config.num_channels()), jnp.float32)
    eager = model_module.SaliencyHead(config).init(key, grid, jnp.zeros((1, 4, 4), jnp.float32))
    compiled = model_module.init_head_variables(config, key)
    same = jax.tree_util.tree_map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), eager, compiled)
    assert all(jax.tree_util.tree_leaves(same))


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


# --- load_model trusts nothing in the file (issue 14, item 4) ---------------------------------


@pytest.fixture
def saved(config, tmp_path):
    """A valid model file (2 components, a 32x32 centre bias) of the fake backbone."""
    cb = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    params = init_params(config, jax.random.PRNGKey(3), centerbias=cb, num_components=2)
    save_model(params, tmp_path / "m.npz")
    return tmp_path / "m.npz"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _rewritten(path, replace: dict) -> "Path":
    """A copy of model file ``path`` with members replaced (name -> .npy bytes) or dropped (None)."""
    out = path.with_name("bad.npz")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = replace.get(info.filename.removesuffix(".npy"), src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
    return out


def _meta(config_changes: dict | None) -> bytes:
    meta = {"format": MODEL_FORMAT}
    if config_changes is not None:
        meta["config"] = {**json.loads(ModelConfig(backbone="fake").to_json()), **config_changes}
    return _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))


def _refused(path, match: str) -> None:
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", [np.nan, -np.inf], ids=["nan", "-inf"])
@pytest.mark.parametrize("member", ["head/params/readout/layer0/kernel", "head/stats/readout/mean", "centerbias"])
def test_non_finite_parameters_or_centerbias_are_refused(saved, member, value):
    with zipfile.ZipFile(saved) as archive:
        array = np.load(io.BytesIO(archive.read(member + ".npy"))).copy()
    array.flat[3] = value
    _refused(_rewritten(saved, {member: _npy(array)}), "finite")


@pytest.mark.parametrize(
    "changes",
    [{"cell": 0}, {"cell": 3}, {"long_side": 100}, {"max_sigma": 1e9}, {"readout_features": [16, 0, 1]}, {"backbone": 7}],
    ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values()))),
)
def test_unusable_config_values_are_refused(saved, changes):
    _refused(_rewritten(saved, {"meta": _meta(changes)}), "unusable config")


def test_missing_config_and_mismatched_head_are_refused(saved):
    _refused(_rewritten(saved, {"meta": _meta(None)}), "no config")
    _refused(_rewritten(saved, {"meta": _meta({"readout_features": [8, 1]})}), "does not fit its config")
    _refused(_rewritten(saved, {"head/stats/readout/std": _npy(np.zeros((2, 9), np.float32))}), "std")
    _refused(_rewritten(saved, {"head/params/finalizer/log_sigma": None}), "missing")


@pytest.mark.parametrize("fraction", [0.0, 0.03, 0.5])
def test_bit_flipped_deflate_stream_is_refused(saved, fraction):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("centerbias.npy")
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length  # the deflate stream, after the local header
    data[start + int(fraction * info.compress_size)] ^= 0xFF
    saved.write_bytes(bytes(data))
    _refused(saved, "cannot read model file")


def test_huge_header_and_deflate_bomb_are_refused_before_decompressing(saved):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    _refused(_rewritten(saved, {"centerbias": header.getvalue() + bytes(64)}), "disagrees")
    bomb = _npy(np.zeros((5000, 5000), np.float32))  # 100 MB of zeros, about 100 kB deflated
    path = _rewritten(saved, {"centerbias": bomb})
    assert path.stat().st_size < 1_000_000
    _refused(path, "over the limit")


def test_extreme_finite_centerbias_in_a_file_is_floored(config, tmp_path):
    template = np.array([[3e38, -3e38], [0.0, 1.0]], np.float32)
    save_model(init_params(config, jax.random.PRNGKey(3), centerbias=template), tmp_path / "m.npz")
    loaded = np.asarray(load_model(tmp_path / "m.npz").centerbias)
    np.testing.assert_array_equal(loaded, [[0.0, -1000.0], [-1000.0, -1000.0]])


def test_unregistered_backbone_needs_backbone_weights(saved):
    """A model trained on precomputed features (backbone outside the registry) loads with its weights given."""
    precomputed = _rewritten(saved, {"meta": _meta({"backbone": "precomputed"})})
    assert load_model(precomputed, backbone_weights={}).num_components == 2
    with pytest.raises(ModelFileError, match="unknown backbone.*backbone_weights"):
        load_model(precomputed)


# --- bundled names and ensembles (issue 12, item 3) -------------------------------------------


@pytest.fixture
def bundled(config, tmp_path, monkeypatch):
    """The package's assets replaced by fake-backbone files for lite0 and lite2 (no lite1), the default lite0+lite2."""
    monkeypatch.setattr(model_module, "ASSETS", tmp_path / "assets")
    monkeypatch.setattr(model_module, "DEFAULT_MODEL", "lite0+lite2")
    (tmp_path / "assets").mkdir()
    for seed, name in enumerate(("lite0", "lite2")):
        save_model(init_params(config, jax.random.PRNGKey(seed), num_components=seed + 1),
                   model_module.bundled_model_path(name))
    return tmp_path / "assets"


def test_bundled_single_names_load_one_model(bundled):
    lite0, lite2 = load_model("lite0"), load_model("lite2")
    assert isinstance(lite0, DeepGazeParams) and isinstance(lite2, DeepGazeParams)
    assert (lite0.num_components, lite2.num_components) == (1, 2)


def test_default_and_joined_names_load_an_ensemble_of_the_members(bundled):
    default = load_model()
    assert isinstance(default, Ensemble) and default.names == ("lite0", "lite2") and len(default) == 2
    assert [m.num_components for m in default] == [1, 2]
    assert load_model("default").names == load_model("lite0+lite2").names == ("lite0", "lite2")
    assert load_model("lite2+lite0").names == ("lite2", "lite0")
    with pytest.raises(ValueError, match="members one by one"):
        load_model("lite0+lite2", backbone_weights={})


def test_missing_bundled_file_says_how_to_bundle_it(bundled):
    for name in ("lite1", "lite0+lite1"):
        with pytest.raises(FileNotFoundError, match="bundle_models.*'lite0', 'lite2'"):
            load_model(name)


def test_names_that_are_not_all_bundled_are_file_paths(bundled, config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model(init_params(config, jax.random.PRNGKey(7), num_components=3), tmp_path / "lite0+mine")
    assert load_model("lite0+mine").num_components == 3
    with pytest.raises(FileNotFoundError, match="no model file at lite9"):
        load_model("lite9")


def test_bundled_files_are_validated_like_any_file(bundled):
    path = model_module.bundled_model_path("lite2")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="cannot read model file"):
        load_model("default")


def test_ensembles_flatten_and_check_their_members(config):
    a, b, c = (init_params(config, jax.random.PRNGKey(k)) for k in range(3))
    assert ensemble([a]) is a
    pair = Ensemble((a, b), ("x", "y"))
    flat = ensemble([pair, c])
    assert flat.members == (a, b, c) and flat.names == ()
    assert ensemble([pair, Ensemble((c,), ("z",))]).names == ("x", "y", "z")
    assert ensemble_members([pair, [c]]) == (a, b, c)
    for bad in ((), (a, pair), (a, "lite0.npz")):
        with pytest.raises(ValueError, match="Ensemble needs"):
            Ensemble(bad)
    with pytest.raises(ValueError, match="2 models got 1 names"):
        Ensemble((a, b), ("x",))
    with pytest.raises(ValueError, match="list of models"):
        ensemble_members([])


# --- the DeepGaze IIE readout kind ---------------------------------------------------------------

IIE = ModelConfig(backbone="fake", readout_features=(8, 16, 1), readout_kind="iie")


def test_readout_kind_is_written_only_when_not_the_default():
    """Model files and run setups (setup.json) written before the field existed read back equal."""
    assert "readout_kind" not in json.loads(ModelConfig(backbone="fake").to_json())
    assert json.loads(IIE.to_json())["readout_kind"] == "iie" and ModelConfig.from_json(IIE.to_json()) == IIE
    old = {k: v for k, v in json.loads(ModelConfig(backbone="fake").to_json()).items()}
    assert ModelConfig.from_json(json.dumps(old)).readout_kind == "deepgaze2"


def test_iie_model_saves_loads_and_gives_normalised_densities(tmp_path):
    params = init_params(IIE, jax.random.PRNGKey(4), num_components=2)
    save_model(params, tmp_path / "iie.npz")
    loaded = load_model(tmp_path / "iie.npz")
    assert loaded.config == IIE and loaded.num_components == 2
    images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 64, 96, 3)), jnp.float32)
    log_cb = jnp.broadcast_to(centerbias_on_grid(None, (16, 24)), (2, 16, 24))
    out = np.asarray(log_density_grid(loaded, images, log_cb))
    np.testing.assert_allclose(out, np.asarray(log_density_grid(params, images, log_cb)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(out, axis=(1, 2))), 0.0, atol=1e-5)
    assert np.ptp(out) > 0


def test_iie_file_with_another_kind_or_paper_head_is_refused(saved):
    _refused(_rewritten(saved, {"meta": _meta({"readout_kind": "iie3"})}), "unknown readout kind 'iie3'")
    _refused(_rewritten(saved, {"meta": _meta({"readout_kind": "iie", "readout_features": [8, 16, 1]})}),
             "does not fit its config")
