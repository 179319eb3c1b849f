import shutil

import jax
import numpy as np
import pytest

from deepgaze_jax import crossvalidation as cv
from deepgaze_jax.report import crossval_report, report_markdown
from deepgaze_jax.model import load_model
from deepgaze_jax.training import TrainConfig
from synthetic import CONFIG, CV_SEED, OTHER_CV_SEED

TRAIN = TrainConfig(max_epochs=3)


def test_fold_assignment_is_seeded_balanced_and_complete():
    folds = cv.fold_assignment(103, 10, seed=0)
    assert np.array_equal(folds, cv.fold_assignment(103, 10, seed=0))
    assert not np.array_equal(folds, cv.fold_assignment(103, 10, seed=1))
    assert sorted(np.bincount(folds)) == [10] * 7 + [11] * 3
    with pytest.raises(ValueError):
        cv.fold_assignment(5, 10)


def test_every_image_is_predicted_by_the_model_that_never_saw_it(finished):
    data, workdir, combined = finished
    folds = cv.fold_assignment(12, 3, CV_SEED)
    heldout = cv.load_heldout(workdir, 3)
    assert sorted(heldout) == list(range(12))
    for k in range(3):
        model = load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={})
        log_cbs = cv.centerbias_grids(np.asarray(model.centerbias), data.fixations, CONFIG.cell)
        variables = jax.tree_util.tree_map(lambda x: x[0], model.head)
        for i in np.flatnonzero(folds == k):
            pred = cv.predict_grids(CONFIG, variables, [data.grids[i]], [log_cbs[i]])[0]
            np.testing.assert_allclose(pred, heldout[int(i)], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.logaddexp.reduce(pred.ravel()), 0.0, atol=1e-4)
    assert combined.num_components == 3
    assert load_model(workdir / "mixture.npz", backbone_weights={}).num_components == 3


def test_rerun_skips_finished_folds_and_resumes_unfinished(finished):
    data, workdir, _ = finished
    before = cv.load_heldout(workdir, 3)
    (workdir / "fold_1" / "heldout.npz").unlink()  # as if killed after fold 1's last checkpoint
    lines = []
    cv.run_crossvalidation(data, CONFIG, TRAIN, workdir, num_folds=3, seed=CV_SEED, log=lines.append)
    assert "fold 0: done, skipping" in lines and "fold 2: done, skipping" in lines
    assert any(line.startswith("fold 1: resuming from epoch 3") for line in lines)
    after = cv.load_heldout(workdir, 3)
    for i in before:
        np.testing.assert_array_equal(before[i], after[i])


def test_a_truncated_heldout_file_does_not_count_as_a_finished_fold(finished, tmp_path):
    """Old code: the fold was skipped as done and reading its predictions crashed later."""
    data, workdir, _ = finished
    copy = tmp_path / "cv"
    shutil.copytree(workdir, copy)
    heldout = copy / "fold_2" / "heldout.npz"
    heldout.write_bytes(heldout.read_bytes()[: heldout.stat().st_size // 2])
    assert cv.fold_done(copy, 0) and not cv.fold_done(copy, 2)
    lines = []
    cv.run_crossvalidation(data, CONFIG, TRAIN, copy, num_folds=3, seed=CV_SEED, log=lines.append)
    assert any(line.startswith("fold 2:") and "does not match its digest" in line for line in lines)
    assert "fold 0: done, skipping" in lines
    assert sorted(cv.load_heldout(copy, 3)) == list(range(12))


def test_a_damaged_setup_file_gives_a_clear_error(finished, tmp_path):
    """Old code: a raw JSONDecodeError."""
    data, workdir, _ = finished
    copy = tmp_path / "cv"
    shutil.copytree(workdir, copy)
    (copy / "setup.json").write_text('{"model_config": {"cell"')
    with pytest.raises(ValueError, match="setup.json is damaged.*delete"):
        cv.run_crossvalidation(data, CONFIG, TRAIN, copy, num_folds=3, seed=CV_SEED, log=lambda _: None)


def test_all_folds_at_once_give_the_fold_by_fold_predictions(finished, tmp_path):
    data, workdir, _ = finished
    cv.run_crossvalidation(data, CONFIG, TRAIN, tmp_path / "at_once", num_folds=3, seed=CV_SEED, log=lambda _: None,
                           at_once=True)
    assert (tmp_path / "at_once" / "batched" / "seeds1_folds_0_1_2" / "checkpoints").is_dir()
    one_by_one, at_once = cv.load_heldout(workdir, 3), cv.load_heldout(tmp_path / "at_once", 3)
    for i in one_by_one:
        np.testing.assert_allclose(at_once[i], one_by_one[i], rtol=1e-4, atol=1e-4)


def test_seeds_add_instances_averaged_in_probability(finished, tmp_path):
    data, workdir, _ = finished
    cv.run_crossvalidation(data, CONFIG, TRAIN, tmp_path / "seeds", num_folds=3, seed=CV_SEED, log=lambda _: None,
                           seeds=2)
    folds = cv.fold_assignment(12, 3, CV_SEED)
    heldout = cv.load_heldout(tmp_path / "seeds", 3)
    first = cv.load_heldout(workdir, 3)  # instance 0 of each fold is the single-seed run's model
    for k in range(3):
        model = load_model(tmp_path / "seeds" / f"fold_{k}" / "model.npz", backbone_weights={})
        assert model.num_components == 2
        log_cbs = cv.centerbias_grids(np.asarray(model.centerbias), data.fixations, CONFIG.cell)
        for i in np.flatnonzero(folds == k):
            preds = [cv.predict_grids(CONFIG, jax.tree_util.tree_map(lambda x, c=c: x[c], model.head), [data.grids[i]],
                                      [log_cbs[i]])[0] for c in range(2)]
            np.testing.assert_allclose(preds[0], first[int(i)], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(heldout[int(i)], np.logaddexp(*preds) - np.log(2), atol=1e-5)
    assert load_model(tmp_path / "seeds" / "mixture.npz", backbone_weights={}).num_components == 6


def test_a_different_run_in_the_same_workdir_is_refused(finished):
    data, workdir, _ = finished
    with pytest.raises(ValueError, match="different crossvalidation run"):
        cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=4), workdir, num_folds=3, seed=CV_SEED,
                               log=lambda _: None)


def test_ensemble_of_runs_averages_heldout_in_probability(finished, tmp_path):
    data, workdir, _ = finished
    other = tmp_path / "other"
    cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=3, seed=7), other, num_folds=3, seed=CV_SEED,
                           log=lambda _: None)
    setup = cv.ensemble_crossvalidation([workdir, other], tmp_path / "ensemble")
    assert setup["ensemble_of"] == [str(workdir), str(other)] and setup["num_folds"] == 3
    members = [cv.load_heldout(workdir, 3), cv.load_heldout(other, 3)]
    ensemble = cv.load_heldout(tmp_path / "ensemble", 3)
    assert sorted(ensemble) == list(range(12))
    for i, got in ensemble.items():
        np.testing.assert_allclose(got, np.logaddexp(members[0][i], members[1][i]) - np.log(2), atol=1e-5)

    original = np.tile([768, 1024], (12, 1))
    scores = [crossval_report(w, data.fixations, original, CONFIG.cell, 3, CV_SEED, progress=False)["overall"]
              for w in (workdir, other, tmp_path / "ensemble")]
    # log is concave: the mixture's log-likelihood is at least the members' mean
    assert scores[2]["ll_bits"] >= (scores[0]["ll_bits"] + scores[1]["ll_bits"]) / 2 - 1e-9
    report = crossval_report(tmp_path / "ensemble", data.fixations, original, CONFIG.cell, 3, CV_SEED, progress=False)
    assert "epochs" not in report["folds"][0]
    assert "| fold 2 |" in report_markdown(report, "ensemble") and "best epoch" not in report_markdown(report, "e")


def test_ensemble_refuses_runs_that_do_not_line_up(finished, tmp_path):
    data, workdir, _ = finished
    shifted = tmp_path / "shifted"
    cv.run_crossvalidation(data, CONFIG, TRAIN, shifted, num_folds=3, seed=OTHER_CV_SEED, log=lambda _: None)
    with pytest.raises(ValueError, match="differ in \\['seed'\\]"):
        cv.ensemble_crossvalidation([workdir, shifted], tmp_path / "e1")
    with pytest.raises(ValueError, match="at least two"):
        cv.ensemble_crossvalidation([workdir], tmp_path / "e2")
    with pytest.raises(FileNotFoundError, match="no setup.json"):
        cv.ensemble_crossvalidation([workdir, tmp_path], tmp_path / "e3")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(workdir, unfinished)  # the same run, as if killed before fold 2 finished
    (unfinished / "fold_2" / "heldout.npz").unlink()
    with pytest.raises(ValueError, match="unfinished folds"):
        cv.ensemble_crossvalidation([workdir, unfinished], tmp_path / "e4")
