"""`evaluate_dataset` on a small generated dataset in the NUS fixations.mat layout (`nus_dataset`, conftest)."""

import hashlib

import numpy as np
import pytest

from deepgaze_jax import evaluate, evaluate_cli, metrics
from deepgaze_jax.baselines import fit_baselines
from deepgaze_jax.data.datasets import Dataset, working_sizes
from deepgaze_jax.data.nus_mat import load_nus_mat
from deepgaze_jax.densities import log_normalize


@pytest.fixture(scope="module")
def dataset(nus_dataset):
    return load_nus_mat(nus_dataset / "stimuli", nus_dataset / "fixations.mat")


def working(dataset):
    """(working-space fixations, {image digest: index}, [working image]) of ``dataset`` in paper mode."""
    sizes = working_sizes(dataset.image_sizes)
    images = [dataset.load_image(i, tuple(int(s) for s in sizes[i])) for i in range(len(dataset))]
    digests = {hashlib.sha1(image.tobytes()).hexdigest(): i for i, image in enumerate(images)}
    return dataset.fixations.rescaled(sizes), digests, images


def oracle(dataset, calls):
    """An `ImageModel` that knows each image's fixation spot, with a broad central prior of its own."""
    fixations, digests, _ = working(dataset)

    def model(image, prior):
        i = digests[hashlib.sha1(image.tobytes()).hexdigest()]
        calls.append((image.shape, prior if isinstance(prior, (str, type(None))) else "array"))
        rows, cols = np.mgrid[: image.shape[0], : image.shape[1]]
        on = fixations.n == i
        spot = -((rows - fixations.y[on].mean()) ** 2 + (cols - fixations.x[on].mean()) ** 2) / (2 * 20.0**2)
        own = -((rows / image.shape[0] - 0.5) ** 2 + (cols / image.shape[1] - 0.5) ** 2) / (2 * 0.2**2)
        log_prior = own if prior is None else 0.0 if prior == "uniform" else prior
        return log_normalize(spot + log_prior, np.float32)

    return model


@pytest.fixture(scope="module")
def scored(dataset):
    """(report, model, calls) of `evaluate_dataset` with the `oracle` model."""
    calls = []
    model = oracle(dataset, calls)
    return evaluate.evaluate_dataset(dataset, model, progress=False), model, calls


def test_evaluate_dataset_with_a_model(dataset, scored):
    """A model that knows the fixations' spot explains more than the centre bias; its benchmark-style
    sAUC is scored on its density with a uniform prior."""
    report, model, calls = scored
    shapes = [shape for shape, prior in calls if prior is None]
    assert shapes == [(384, 512, 3), (512, 384, 3), (384, 512, 3), (384, 512, 3)]  # working-space images
    assert [prior for _, prior in calls].count("uniform") == 4
    scores = report["scores"]["model"]
    assert scores["ll_bits"] > report["scores"]["centerbias"]["ll_bits"]
    gold_ig_bits = report["scores"]["goldstandard"]["ig_bits"]
    assert scores["ig_explained_pct"] == pytest.approx(100 * scores["ig_bits"] / gold_ig_bits)
    assert scores["auc"] > report["scores"]["centerbias"]["auc"]

    fixations, _, images = working(dataset)
    expected = metrics.sauc_no_centerbias(lambda i: model(images[i], "uniform"), fixations)
    assert scores["sauc_no_centerbias"] == pytest.approx(expected["sauc_no_centerbias"])
    assert scores["sauc_no_centerbias"] != pytest.approx(scores["sauc"])  # another map than the one with its prior
    per_image = report["per_image"]["model"]["sauc_no_centerbias"]
    np.testing.assert_allclose(per_image, expected["per_image_sauc_no_centerbias"])
    assert "sauc_no_centerbias" not in report["scores"]["centerbias"]
    table = evaluate_cli.format_table(report["scores"]).splitlines()
    assert "model" in table[0] and any(line.startswith("sauc_no_centerbias") for line in table)


def test_fitted_centerbias_is_leave_one_image_out(dataset):
    """A model that is nothing but its prior scores exactly the centre-bias baseline with --centerbias fit:
    each image's prior is the centre bias fitted without that image (a prior that had seen the image's
    fixations would score higher than the leave-one-image-out baseline)."""

    def prior_only(image, prior):
        if isinstance(prior, np.ndarray):
            return prior
        return np.full(image.shape[:2], -np.log(image.shape[0] * image.shape[1]), np.float32)

    report = evaluate.evaluate_dataset(dataset, prior_only, progress=False, centerbias="fit")
    model, centerbias = report["scores"]["model"], report["scores"]["centerbias"]
    assert model["ll_bits"] == pytest.approx(centerbias["ll_bits"], abs=1e-9)
    assert model["ig_bits"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(report["per_image"]["model"]["auc"], report["per_image"]["centerbias"]["auc"])
    assert model["sauc_no_centerbias"] == pytest.approx(0.5)  # a uniform prior gives a flat map
    assert report["model_centerbias"] == "fit"

    fixations, _, _ = working(dataset)
    full = fit_baselines(fixations).centerbias  # fitted on every image, the scored one included
    rows, cols = fixations.pixel_indices()
    on = [fixations.n == i for i in range(len(dataset))]
    maps = [full.log_density(*size) for size in fixations.image_sizes]
    seen = np.concatenate([metrics.log_likelihood_bits(m, rows[o], cols[o]) for m, o in zip(maps, on)])
    assert seen.mean() > model["ll_bits"]  # what a centre bias that saw the scored image would claim


def test_per_image_table_has_a_row_per_image(dataset, scored):
    report = scored[0]
    rows = evaluate.per_image_table(report)
    assert [row["image"] for row in rows] == [f"img{i}.jpg" for i in range(4)]
    assert [row["num_fixations"] for row in rows] == list(np.bincount(dataset.fixations.n))
    assert list(rows[0])[:4] == ["image", "num_fixations", "model_ll_bits", "model_ig_bits"]
    assert rows[2]["model_sauc_no_centerbias"] == report["per_image"]["model"]["sauc_no_centerbias"][2]
    assert rows[1]["goldstandard_ig_bits"] == report["per_image"]["goldstandard"]["ig_bits"][1]
    counts = np.array([row["num_fixations"] for row in rows])
    ll = np.array([row["model_ll_bits"] for row in rows])
    assert np.sum(counts * ll) / counts.sum() == pytest.approx(report["scores"]["model"]["ll_bits"])


def test_unknown_centerbias_source_is_refused(dataset):
    with pytest.raises(ValueError, match="'model' or 'fit'"):
        evaluate.evaluate_dataset(dataset, oracle(dataset, []), progress=False, centerbias="bundled")


def test_no_fixations_is_an_error_before_any_work(dataset):
    empty = Dataset(
        stimuli=dataset.stimuli, fixations=dataset.fixations.select(np.zeros(len(dataset.fixations), bool)),
        name="empty",
    )  # fmt: skip
    calls = []
    with pytest.raises(evaluate.NoFixationsError, match="no fixations"):
        evaluate.evaluate_dataset(empty, oracle(dataset, calls), progress=False)
    assert calls == []
