import functools
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import fake_backbone
from deepgaze_jax import feature_cache as fc
from deepgaze_jax.backbones import registered
from deepgaze_jax.model import ModelConfig, feature_grid

CONFIG = ModelConfig(backbone="fake")


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(64, 96, 3)] * 3 + [(96, 64, 3)] * 2]
    return images, fake_backbone.FAKE.load_weights()


def counting(monkeypatch):
    """Counts the images the backbone is run on."""
    seen = []
    real = fc._jitted_grid

    def wrapped(config, dtype):
        compute = real(config, dtype)
        return lambda weights, batch: seen.append(len(batch)) or compute(weights, batch)

    monkeypatch.setattr(fc, "_jitted_grid", wrapped)
    return seen


def test_grids_match_the_model_and_are_read_only_arrays(tmp_path, setup):
    images, weights = setup
    grids = fc.cached_feature_grids(images, CONFIG, weights, tmp_path, batch_size=2, progress=False)
    for image, grid in zip(images, grids):
        expected = feature_grid(CONFIG, weights, jnp.asarray(image)[None])[0]
        assert not isinstance(grid, np.memmap) and not grid.flags.writeable and grid.dtype == np.float16
        np.testing.assert_allclose(grid.astype(np.float32), expected, rtol=1e-3, atol=1e-3)
    assert grids[0].shape == (4, 6, 9) and grids[4].shape == (6, 4, 9)
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index["entries"]) == 5 and len(list(tmp_path.glob("*.npy"))) == 5


def test_only_changed_or_damaged_entries_are_rebuilt(tmp_path, setup, monkeypatch):
    images, weights = setup
    first = fc.cached_feature_grids(images, CONFIG, weights, tmp_path, batch_size=2, progress=False)
    seen = counting(monkeypatch)
    again = fc.cached_feature_grids(images, CONFIG, weights, tmp_path, batch_size=2, progress=False)
    assert seen == []
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)

    images[1] = images[1].copy()
    images[1][0, 0, 0] ^= 1  # one changed pixel
    key = fc.entry_key(images[3], fc.cache_context(CONFIG, fc.weights_fingerprint(weights), "float16"))
    (tmp_path / f"{key}.npy").write_bytes(b"truncated")
    fc.cached_feature_grids(images, CONFIG, weights, tmp_path, batch_size=2, progress=False)
    assert sum(seen) == 2 * 2  # two images, each in a batch padded to 2


def test_a_grid_file_overwritten_with_other_bytes_of_the_same_size_is_rebuilt(tmp_path, setup, monkeypatch):
    """Old code: a same-size file with other values was used as is."""
    images, weights = setup
    first = fc.cached_feature_grids(images, CONFIG, weights, tmp_path, batch_size=2, progress=False)
    key = fc.entry_key(images[2], fc.cache_context(CONFIG, fc.weights_fingerprint(weights), "float16"))
    path = tmp_path / f"{key}.npy"
    raw = bytearray(path.read_bytes())
    raw[-8:] = bytes(8)  # the last four float16 values set to 0: same size, valid header
    path.write_bytes(bytes(raw))
    seen = counting(monkeypatch)
    again = fc.cached_feature_grids(images, CONFIG, weights, tmp_path, batch_size=2, progress=False)
    assert seen == [2]  # only image 2, in a batch padded to 2
    np.testing.assert_array_equal(again[2], first[2])


def test_keys_depend_on_weights_taps_and_dtype(setup):
    images, weights = setup
    fp = fc.weights_fingerprint(weights)
    other = dict(weights, fine=weights["fine"] + 1e-3)
    keys = {
        fc.entry_key(images[0], fc.cache_context(CONFIG, fp, "float16")),
        fc.entry_key(images[0], fc.cache_context(CONFIG, fc.weights_fingerprint(other), "float16")),
        fc.entry_key(images[0], fc.cache_context(ModelConfig(backbone="fake", taps=("fine",)), fp, "float16")),
        fc.entry_key(images[0], fc.cache_context(CONFIG, fp, "bfloat16")),
        fc.entry_key(images[1], fc.cache_context(CONFIG, fp, "float16")),
    }
    assert len(keys) == 5


def _defining_module(backbone):
    """The module whose code ``backbone.features`` runs (through any functools.partial)."""
    fn = backbone.features
    while isinstance(fn, functools.partial):
        fn = fn.func
    return sys.modules[fn.__module__]


@pytest.mark.parametrize("name", registered())
def test_keys_depend_on_the_backbone_code(name, setup, monkeypatch, tmp_path):
    """Editing the file that computes a backbone's features changes every key (and undoing it restores them)."""
    images, weights = setup
    config = ModelConfig(backbone=name)
    fp = fc.weights_fingerprint(weights)
    before = fc.entry_key(images[0], fc.cache_context(config, fp, "float16"))
    module = _defining_module(config.get_backbone())
    edited = tmp_path / Path(module.__file__).name
    edited.write_text(Path(module.__file__).read_text() + "\n# edited\n")
    real_file = module.__file__
    monkeypatch.setattr(module, "__file__", str(edited))
    assert fc.entry_key(images[0], fc.cache_context(config, fp, "float16")) != before
    monkeypatch.setattr(module, "__file__", real_file)
    assert fc.entry_key(images[0], fc.cache_context(config, fp, "float16")) == before


def test_bfloat16_storage(tmp_path, setup):
    images, weights = setup
    grids = fc.cached_feature_grids(images[:1], CONFIG, weights, tmp_path, dtype="bfloat16", progress=False)
    assert grids[0].dtype == ml_dtypes.bfloat16
    expected = feature_grid(CONFIG, weights, jnp.asarray(images[0])[None])[0]
    np.testing.assert_allclose(grids[0].astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="dtype"):
        fc.cached_feature_grids(images[:1], CONFIG, weights, tmp_path, dtype="float64")


def test_bad_index_is_a_clear_error(tmp_path, setup):
    images, weights = setup
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(fc.FeatureCacheError, match="delete it to rebuild"):
        fc.cached_feature_grids(images, CONFIG, weights, tmp_path, progress=False)


def test_prune_removes_entries_not_kept(tmp_path, setup):
    images, weights = setup
    fc.cached_feature_grids(images, CONFIG, weights, tmp_path, progress=False)
    context = fc.cache_context(CONFIG, fc.weights_fingerprint(weights), "float16")
    keep = [fc.entry_key(img, context) for img in images[:2]]
    assert fc.prune(tmp_path, keep) == 3
    assert sorted(p.stem for p in tmp_path.glob("*.npy")) == sorted(keep)


def test_index_is_written_once_per_interval_and_an_interrupted_build_keeps_what_it_indexed(tmp_path, setup, monkeypatch):
    images, weights = setup
    writes = []
    real_write = fc.write_atomic
    monkeypatch.setattr(fc, "write_atomic", lambda path, text: writes.append(path.name) or real_write(path, text))
    monkeypatch.setattr(fc, "INDEX_WRITE_INTERVAL_S", 1e9)
    fc.cached_feature_grids(images, CONFIG, weights, tmp_path / "once", batch_size=2, progress=False)
    assert writes == ["index.json"]  # three batches, one write at the end

    monkeypatch.setattr(fc, "INDEX_WRITE_INTERVAL_S", 0.0)
    real = fc._jitted_grid
    calls = []

    def failing_second_batch(config, dtype):
        compute = real(config, dtype)

        def run(weights, batch):
            calls.append(len(batch))
            if len(calls) == 2:
                raise KeyboardInterrupt
            return compute(weights, batch)
        return run

    monkeypatch.setattr(fc, "_jitted_grid", failing_second_batch)
    with pytest.raises(KeyboardInterrupt):
        fc.cached_feature_grids(images, CONFIG, weights, tmp_path / "cut", batch_size=2, progress=False)
    assert len(json.loads((tmp_path / "cut" / "index.json").read_text())["entries"]) == 2
    monkeypatch.setattr(fc, "_jitted_grid", real)
    seen = counting(monkeypatch)
    fc.cached_feature_grids(images, CONFIG, weights, tmp_path / "cut", batch_size=2, progress=False)
    assert sum(seen) == 4  # the first batch's two images were kept; the rest (padded batches of 2) computed
