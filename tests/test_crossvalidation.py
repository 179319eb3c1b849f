import json
import shutil

import jax
import numpy as np
import pytest

from deepgaze_jax import crossvalidation as cv
from deepgaze_jax.report import crossval_report, report_markdown
from deepgaze_jax.model import load_model
from deepgaze_jax.training import TrainConfig
from synthetic import CONFIG, CV_SEED, OTHER_CV_SEED, make_data

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


def test_ensemble_averages_the_maps_without_centerbias_when_every_run_has_them(finished, tmp_path):
    data, workdir, _ = finished
    other = tmp_path / "other"
    cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=3, seed=7), other, num_folds=3, seed=CV_SEED, log=lambda _: None)
    cv.ensemble_crossvalidation([workdir, other], tmp_path / "ensemble")
    members = [cv.load_heldout_no_centerbias(w, 3) for w in (workdir, other)]
    ensemble = cv.load_heldout_no_centerbias(tmp_path / "ensemble", 3)
    for i, got in ensemble.items():
        np.testing.assert_allclose(got, np.logaddexp(members[0][i], members[1][i]) - np.log(2), atol=1e-5)
    original = np.tile([768, 1024], (12, 1))
    report = crossval_report(tmp_path / "ensemble", data.fixations, original, CONFIG.cell, 3, CV_SEED, progress=False,
                             heldout_no_centerbias=ensemble)
    assert 0.0 <= report["overall"]["sauc_no_centerbias"] <= 1.0 and report["stopping"] == "inner"
    assert "sAUC without centre bias" in report_markdown(report, "ensemble")

    for k in range(3):  # as if `other` had finished before heldout_no_cb.npz existed
        cv.mark_done(other / f"fold_{k}", ("model.npz", "history.json", cv.HELDOUT))
    lines = []
    cv.ensemble_crossvalidation([workdir, other], tmp_path / "without", log=lines.append)
    assert cv.load_heldout_no_centerbias(tmp_path / "without", 3) is None and sorted(cv.load_heldout(tmp_path / "without", 3)) == list(range(12))
    assert any("re-run their crossvalidation command" in line for line in lines)


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


@pytest.mark.parametrize("stopping", cv.STOPPING)
def test_fold_split_holds_out_part_k_and_stops_on_the_chosen_part(stopping):
    folds = cv.fold_assignment(23, 5, seed=1)
    for k in range(5):
        split = cv.fold_split(folds, k, 5, stopping)
        stop_part = (k + 1) % 5 if stopping == "inner" else k
        assert split.stop_part == stop_part
        np.testing.assert_array_equal(split.heldout, np.flatnonzero(folds == k))
        np.testing.assert_array_equal(split.stop, np.flatnonzero(folds == stop_part))
        assert not set(split.train) & set(split.stop) and not set(split.train) & set(split.heldout)
        assert set(split.train) | set(split.stop) | set(split.heldout) == set(range(23))
        if stopping == "inner":
            assert not set(split.stop) & set(split.heldout)


@pytest.mark.parametrize("at_once", [False, True])
def test_no_fold_trains_or_stops_on_its_scored_part(at_once, tmp_path, monkeypatch):
    """Old code: each fold stopped on its scored part (the stopping set was the held-out part)."""
    grids, _, fixations = make_data(num_images=12)
    used, centerbias_fixations = [], []  # per model: (training images, stopping images); fixations per centre bias
    if at_once:
        make_pool = cv.batched_training.make_pool

        def recording_pool(grids, fixations, centerbias, train_images, val_images, *args, **kwargs):
            used.extend(zip(train_images, val_images))
            return make_pool(grids, fixations, centerbias, train_images, val_images, *args, **kwargs)

        monkeypatch.setattr(cv.batched_training, "make_pool", recording_pool)
    else:
        make_groups = cv.input_pipeline.make_groups

        def recording_groups(grids, log_cbs, fixations, index, *args, **kwargs):
            used.append(index)
            return make_groups(grids, log_cbs, fixations, index, *args, **kwargs)

        monkeypatch.setattr(cv.input_pipeline, "make_groups", recording_groups)
    fit = cv.fit_center_bias
    monkeypatch.setattr(cv, "fit_center_bias", lambda f, **kw: centerbias_fixations.append(len(f)) or fit(f, **kw))
    cv.run_crossvalidation(cv.FoldData(grids, fixations), CONFIG, TrainConfig(max_epochs=1), tmp_path, num_folds=3,
                           seed=0, log=lambda _: None, at_once=at_once)
    pairs = used if at_once else list(zip(used[::2], used[1::2]))
    folds = cv.fold_assignment(12, 3, 0)
    assert len(pairs) == 3
    for k, (train, stop) in enumerate(pairs):
        scored, stopping = set(np.flatnonzero(folds == k)), set(np.flatnonzero(folds == (k + 1) % 3))
        assert set(stop) == stopping and not set(train) & scored and not set(train) & stopping
        assert centerbias_fixations[k] == int(np.isin(fixations.n, train).sum())  # fitted on the training images only
        history = json.loads((tmp_path / f"fold_{k}" / "history.json").read_text())
        assert (history["stopping_part"], history["num_stopping_images"]) == ((k + 1) % 3, len(stopping))
        # the saved model's stopping-set NLL is the training loop's validation loss at the best epoch
        best_val_nats = history["val_nll_nats"][history["best_epoch"]]
        assert history["stopping_nll_bits"] == pytest.approx(best_val_nats / np.log(2), abs=1e-4)
    assert cv.read_setup(tmp_path)["stopping"] == "inner"


def test_stopping_is_recorded_and_an_old_workdir_resumes_with_its_choice(tmp_path):
    """A workdir written before the choice existed (no "stopping" in setup.json, no heldout_no_cb.npz) resumes
    as "heldout" and gets its maps without centre bias from its models; asking for "inner" there is an error."""
    grids, _, fixations = make_data(num_images=12)
    data = cv.FoldData(grids, fixations)
    cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=1), tmp_path, num_folds=3, log=lambda _: None,
                           stopping="heldout")
    assert json.loads((tmp_path / "fold_0" / "history.json").read_text())["stopping_part"] == 0
    new = cv.load_heldout(tmp_path, 3, cv.HELDOUT_NO_CB)
    setup = json.loads((tmp_path / "setup.json").read_text())
    assert setup.pop("stopping") == "heldout"
    (tmp_path / "setup.json").write_text(json.dumps(setup))
    for k in range(3):
        (tmp_path / f"fold_{k}" / cv.HELDOUT_NO_CB).unlink()
        cv.mark_done(tmp_path / f"fold_{k}", ("model.npz", "history.json", cv.HELDOUT))
    assert cv.load_heldout_no_centerbias(tmp_path, 3) is None
    lines = []
    cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=1), tmp_path, num_folds=3, log=lines.append)
    assert lines.count("fold 1: done, skipping") == 1 and any("adding its held-out maps" in line for line in lines)
    restored = cv.load_heldout_no_centerbias(tmp_path, 3)
    for i in new:
        np.testing.assert_allclose(restored[i], new[i], atol=1e-6)
    with pytest.raises(ValueError, match="stopping 'heldout'.*--stopping heldout"):
        cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=1), tmp_path, num_folds=3, log=lambda _: None,
                               stopping="inner")


def test_inner_stopping_needs_three_folds_and_a_known_choice(tmp_path):
    data = cv.FoldData(*make_data(num_images=4)[::2])
    with pytest.raises(ValueError, match="at least 3 folds.*--stopping heldout"):
        cv.run_crossvalidation(data, CONFIG, TRAIN, tmp_path / "a", num_folds=2, log=lambda _: None)
    with pytest.raises(ValueError, match="one of inner, heldout"):
        cv.run_crossvalidation(data, CONFIG, TRAIN, tmp_path / "b", num_folds=3, log=lambda _: None, stopping="outer")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_heldout_maps_without_centerbias_are_the_fold_models_with_a_uniform_prior(finished):
    data, workdir, _ = finished
    folds = cv.fold_assignment(12, 3, CV_SEED)
    with_cb, without = cv.load_heldout(workdir, 3), cv.load_heldout_no_centerbias(workdir, 3)
    assert sorted(without) == list(range(12))
    for k in range(3):
        assert cv.HELDOUT_NO_CB in cv.done_outputs(workdir, k)
        model = load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={})
        variables = jax.tree_util.tree_map(lambda x: x[0], model.head)
        for i in np.flatnonzero(folds == k):
            uniform = np.full(without[int(i)].shape, -np.log(without[int(i)].size), np.float32)
            pred = cv.predict_grids(CONFIG, variables, [data.grids[i]], [uniform])[0]
            np.testing.assert_allclose(pred, without[int(i)], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.logaddexp.reduce(without[int(i)].ravel()), 0.0, atol=1e-4)
    assert max(np.abs(with_cb[i] - without[i]).max() for i in with_cb) > 1e-3  # the centre bias was left out


@pytest.mark.parametrize("at_once", [False, True])
def test_each_instance_starts_from_its_own_pretrained_model(finished, tmp_path, at_once):
    data, workdir, _ = finished
    inits = [load_model(workdir / f"fold_{k}" / "model.npz", backbone_weights={}) for k in (0, 1)]
    cv.run_crossvalidation(data, CONFIG, TrainConfig(max_epochs=0), tmp_path / "w", num_folds=3, seed=CV_SEED,
                           log=lambda _: None, init=inits, seeds=2, at_once=at_once)
    for k in range(3):
        model = load_model(tmp_path / "w" / f"fold_{k}" / "model.npz", backbone_weights={})
        for instance, init in enumerate(inits):  # no epoch run: each instance is its init, params and stats
            for a, b in zip(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x[instance], model.head)),
                            jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x[0], init.head))):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((tmp_path / "w" / "setup.json").read_text())["init"] == "pretrained, 2 models"


def test_inits_must_be_one_per_instance(finished, tmp_path):
    data, workdir, _ = finished
    init = load_model(workdir / "fold_0" / "model.npz", backbone_weights={})
    for inits, seeds, message in (([init], 2, "one pretrained model per instance"), ([init] * 3, 2, "--seeds 3")):
        with pytest.raises(ValueError, match=message):
            cv.run_crossvalidation(data, CONFIG, TRAIN, tmp_path / "w", num_folds=3, seed=CV_SEED, init=inits,
                                   seeds=seeds, log=lambda _: None)
    assert not (tmp_path / "w").exists()
