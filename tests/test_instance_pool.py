import json
import shutil

import jax
import numpy as np
import pytest

from deepgaze_jax import crossvalidation as cv
from deepgaze_jax.instance_pool import pool_crossvalidations
from deepgaze_jax.model import load_model
from deepgaze_jax.report import crossval_report, report_markdown
from deepgaze_jax.training import TrainConfig
from synthetic import CONFIG, CV_SEED, make_data

TRAIN = TrainConfig(max_epochs=1)


@pytest.fixture(scope="module")
def runs(finished, tmp_path_factory):
    """(data, root): ``root/a`` and ``root/b`` one-instance runs started from pretrained models A and B,
    ``root/both`` one run of two instances started from A and B, ``root/pooled`` the pool of a and b."""
    data, workdir, _ = finished
    root = tmp_path_factory.mktemp("pool")
    inits = [load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={}) for k in (0, 1)]
    for name, init in (("a", inits[:1]), ("b", inits[1:]), ("both", inits)):
        cv.run_crossvalidation(data, CONFIG, TRAIN, root / name, num_folds=3, seed=CV_SEED, log=lambda _: None,
                               init=init, seeds=len(init))
    pool_crossvalidations([root / "a", root / "b"], root / "pooled", data, log=lambda _: None)
    return data, root


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_a_pool_of_runs_is_one_run_of_all_their_instances(runs):
    data, root = runs
    for k in range(3):
        pooled, both = (load_model(root / w / f"fold_{k}" / "model.npz", backbone_weights={}) for w in ("pooled", "both"))
        assert pooled.num_components == 2
        for got, want in zip(leaves(pooled.head), leaves(both.head)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(pooled.centerbias), np.asarray(both.centerbias))
        histories = [json.loads((root / w / f"fold_{k}" / "history.json").read_text()) for w in ("pooled", "both")]
        assert histories[0]["stopping_nll_bits"] == pytest.approx(histories[1]["stopping_nll_bits"], abs=1e-5)
        assert histories[0]["num_instances"] == 2 and len(histories[0]["runs"]) == 2
    for name in (cv.HELDOUT, cv.HELDOUT_NO_CB):
        pooled, both = cv.load_heldout(root / "pooled", 3, name), cv.load_heldout(root / "both", 3, name)
        assert sorted(pooled) == list(range(12))
        for i in pooled:
            np.testing.assert_allclose(pooled[i], both[i], atol=1e-5)
    setup = cv.read_setup(root / "pooled")
    assert setup["seeds"] == 2 and setup["pooled_from"] == [str(root / "a"), str(root / "b")]
    assert load_model(root / "pooled" / "mixture.npz", backbone_weights={}).num_components == 6


def test_the_pools_held_out_maps_average_the_runs_in_probability(runs):
    _, root = runs
    a, b, pooled = (cv.load_heldout(root / w, 3) for w in ("a", "b", "pooled"))
    for i in pooled:
        np.testing.assert_allclose(pooled[i], np.logaddexp(a[i], b[i]) - np.log(2), atol=1e-5)


def test_the_pools_report_lists_the_stopping_set_nll_of_its_instances(runs):
    data, root = runs
    report = crossval_report(root / "pooled", data.fixations, np.tile([768, 1024], (12, 1)), CONFIG.cell, 3, CV_SEED,
                             progress=False)
    assert all("stopping_nll_bits" in fold and "epochs" not in fold for fold in report["folds"])
    markdown = report_markdown(report, "pooled")
    assert "stopping-set NLL (bits/fix)" in markdown and "best epoch" not in markdown


def test_a_pool_resumes_and_redoes_only_an_unfinished_fold(runs, tmp_path, monkeypatch):
    data, root = runs
    shutil.copytree(root / "pooled", tmp_path / "pooled")
    (tmp_path / "pooled" / "fold_1" / "heldout.npz").write_bytes(b"truncated")
    lines = []
    monkeypatch.chdir(root)  # the same runs, named relative to another folder
    pool_crossvalidations(["a", "b"], tmp_path / "pooled", data, log=lines.append)
    assert [line.split(":")[0] for line in lines if "done, skipping" in line] == ["fold 0", "fold 2"]
    assert cv.fold_done(tmp_path / "pooled", 1)
    redone, original = cv.fold_heldout(tmp_path / "pooled", 1), cv.fold_heldout(root / "pooled", 1)
    assert sorted(redone) == sorted(original)
    for i in original:
        np.testing.assert_array_equal(redone[i], original[i])

def edit_setup(workdir, **train_config):
    """Changes fields of the train config recorded in ``workdir``'s setup.json."""
    setup = json.loads((workdir / "setup.json").read_text())
    setup["train_config"].update(train_config)
    (workdir / "setup.json").write_text(json.dumps(setup))


def test_only_distinct_finished_runs_of_one_configuration_pool(runs, tmp_path):
    data, root = runs
    other = tmp_path / "other"
    shutil.copytree(root / "b", other)
    edit_setup(other, max_epochs=2)  # as if trained longer
    with pytest.raises(ValueError, match="differ in \\['training'\\]"):
        pool_crossvalidations([root / "a", other], tmp_path / "p1", data)
    with pytest.raises(ValueError, match="named twice"):
        pool_crossvalidations([root / "a", root / "a"], tmp_path / "p2", data)
    with pytest.raises(ValueError, match="at least two"):
        pool_crossvalidations([root / "a"], tmp_path / "p3", data)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(root / "b", unfinished)
    (unfinished / "fold_2" / "model.npz").unlink()
    with pytest.raises(ValueError, match="unfinished folds"):
        pool_crossvalidations([root / "a", unfinished], tmp_path / "p4", data)
    grids, _, fixations = make_data(num_images=12, per_image=16)  # more fixations on as many images
    with pytest.raises(ValueError, match="the data given has 12"):
        pool_crossvalidations([root / "a", root / "b"], tmp_path / "p5", cv.FoldData(grids, fixations))
    assert not any((tmp_path / f"p{i}").exists() for i in range(1, 6))


def test_runs_that_differ_only_in_their_initialisation_seed_pool_but_copies_do_not(runs, tmp_path):
    data, root = runs
    copy = tmp_path / "copy"
    shutil.copytree(root / "a", copy)
    with pytest.raises(ValueError, match="instances 0 and 1 are the same model"):
        pool_crossvalidations([root / "a", copy], tmp_path / "p", data)
    edit_setup(copy, seed=7)  # a run with another --init-seed (here the same weights: still refused)
    with pytest.raises(ValueError, match="same model"):
        pool_crossvalidations([root / "a", copy], tmp_path / "q", data)
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
    assert cv.read_setup(root / "pooled")["init_seeds"] == [0, 0]


def test_a_pool_whose_runs_maps_disagree_with_its_recomputed_ones_is_refused(runs, tmp_path):
    data, root = runs
    changed = tmp_path / "b"
    shutil.copytree(root / "b", changed)  # as if the features had changed since run b
    heldout = cv.fold_heldout(changed, 0)
    cv.write_heldout(changed / "fold_0", sorted(heldout), [heldout[i] + 0.01 for i in sorted(heldout)])
    cv.mark_done(changed / "fold_0", cv.FOLD_OUTPUTS)
    with pytest.raises(ValueError, match="feature cache"):
        pool_crossvalidations([root / "a", changed], tmp_path / "pooled", data)
    assert not cv.fold_done(tmp_path / "pooled", 0)


def test_a_pool_pools_again_with_another_run(runs, finished, tmp_path):
    data, root = runs
    third = tmp_path / "c"
    init = load_model(finished[1] / "fold_2" / "model.npz", backbone_weights={})
    cv.run_crossvalidation(data, CONFIG, TRAIN, third, num_folds=3, seed=CV_SEED, log=lambda _: None, init=[init])
    again = pool_crossvalidations([root / "pooled", third], tmp_path / "abc", data, log=lambda _: None)
    assert again.num_components == 9 and cv.read_setup(tmp_path / "abc")["init_seeds"] == [0, 0, 0]
    a, b, c, abc = (cv.load_heldout(w, 3) for w in (root / "a", root / "b", third, tmp_path / "abc"))
    for i in abc:
        np.testing.assert_allclose(abc[i], np.logaddexp(np.logaddexp(a[i], b[i]), c[i]) - np.log(3), atol=1e-5)
