"""Baseline fits kept on disk: the same fit is read back exactly, anything that decides it refits."""

import json
import logging

import numpy as np
import pytest

from deepgaze_jax import centerbias, crossvalidation, fit_cache, goldstandard, input_pipeline
from deepgaze_jax.baselines import fit_baselines
from deepgaze_jax.data.fixations import Fixations
from test_centerbias import gaussian_fixations


def observed(seed=0, images=20, per_image=24):
    """`gaussian_fixations` with 6 observers per image (what the gold standard needs)."""
    f = gaussian_fixations(seed=seed, images=images, per_image=per_image)
    fixations, _ = Fixations.create(f.x, f.y, f.n, f.image_sizes, subject=np.tile(np.arange(6), len(f.x) // 6))
    return fixations


def no_fitting(*args, **kwargs):
    raise AssertionError("fitted again instead of reading the stored fit")


def test_a_stored_centre_bias_fit_is_read_back_exactly(tmp_path, monkeypatch):
    fixations = gaussian_fixations(images=30)
    fresh = centerbias.fit_center_bias(fixations)
    stored = centerbias.fit_center_bias(fixations, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("centerbias-*.json"))) == 1
    monkeypatch.setattr(centerbias, "_fit_center_bias_params", no_fitting)
    again = centerbias.fit_center_bias(fixations, cache_dir=tmp_path)
    for model in (stored, again):
        assert (model.bandwidth, model.uniform_weight) == (fresh.bandwidth, fresh.uniform_weight)
        np.testing.assert_array_equal(model.x, fresh.x)
        np.testing.assert_array_equal(model.template(), fresh.template())


def test_other_fixations_bounds_or_code_fit_again(tmp_path, monkeypatch):
    fixations = gaussian_fixations(images=30)
    first = centerbias.fit_center_bias(fixations, cache_dir=tmp_path)
    other = centerbias.fit_center_bias(fixations.subset_images(np.arange(20)), cache_dir=tmp_path)
    bounds = centerbias.fit_center_bias(fixations, bandwidth_bounds=(0.01, 0.05), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("centerbias-*.json"))) == 3
    assert other.bandwidth != first.bandwidth and bounds.bandwidth <= 0.05
    monkeypatch.setattr(fit_cache, "code_fingerprint", lambda: "edited code")
    centerbias.fit_center_bias(fixations, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("centerbias-*.json"))) == 4


@pytest.mark.parametrize("damage", [b"{not json", b'{"key": "someone else", "fit": {"bandwidth": 1.0}}', b""])
def test_an_unusable_stored_fit_is_logged_and_fitted_again(tmp_path, caplog, damage):
    fixations = gaussian_fixations(images=30)
    first = centerbias.fit_center_bias(fixations, cache_dir=tmp_path)
    (path,) = tmp_path.glob("centerbias-*.json")
    path.write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="deepgaze_jax.fit_cache"):
        again = centerbias.fit_center_bias(fixations, cache_dir=tmp_path)
    assert "unusable" in caplog.text and str(path) in caplog.text
    assert again.bandwidth == first.bandwidth
    assert json.loads(path.read_text())["fit"]["bandwidth"] == first.bandwidth  # rewritten whole


def test_stored_baselines_equal_fresh_ones(tmp_path, monkeypatch):
    fixations = observed()
    fresh = fit_baselines(fixations)
    fit_baselines(fixations, cache_dir=tmp_path)
    monkeypatch.setattr(centerbias, "_fit_center_bias_params", no_fitting)
    monkeypatch.setattr(goldstandard, "fit_bandwidth", no_fitting)
    stored = fit_baselines(fixations, cache_dir=tmp_path)
    assert stored.gold == fresh.gold and stored.centerbias.bandwidth == fresh.centerbias.bandwidth
    np.testing.assert_array_equal(stored.gold_loglik, fresh.gold_loglik)
    np.testing.assert_array_equal(stored.centerbias_maps(3), fresh.centerbias_maps(3))


def test_fold_setups_keep_their_centre_bias_fits(tmp_path):
    fixations = gaussian_fixations(images=30)
    data = crossvalidation.FoldData([np.zeros((2, 2, 1), np.float16)] * fixations.num_images, fixations)
    folds = crossvalidation.fold_assignment(fixations.num_images, 3)
    splits = [crossvalidation.fold_split(folds, k, 3, "inner") for k in range(3)]
    sums = input_pipeline.feature_sums(data.grids)
    fresh = crossvalidation.fold_setups(splits, data, sums)
    stored = crossvalidation.fold_setups(splits, data, sums, fit_cache_dir=tmp_path)
    assert len(list(tmp_path.glob("centerbias-*.json"))) == 3
    for a, b in zip(fresh, stored):
        np.testing.assert_array_equal(a.template, b.template)
