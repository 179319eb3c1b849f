import json

import numpy as np
import pytest

from deepgaze_jax.report import crossval_report, report_markdown
from synthetic import CONFIG, CV_SEED


def test_report_scores_per_fold_overall_and_paper_subset(finished):
    data, workdir, _ = finished
    original = np.tile([768, 1024], (12, 1))
    original[::2] = [600, 800]
    report = crossval_report(workdir, data.fixations, original, CONFIG.cell, num_folds=3, seed=CV_SEED, progress=False)
    overall = report["overall"]
    assert overall["num_images"] == 12 and overall["num_fixations"] == len(data.fixations)
    assert report["paper_subset_1024x768"]["num_images"] == 6
    assert sum(f["num_fixations"] for f in report["folds"]) == len(data.fixations)
    np.testing.assert_allclose(overall["ig_bits"], overall["ll_bits"] - overall["baseline_ll_bits"])
    assert overall["ll_bits"] > 0.1  # fixations follow feature channel 0
    assert 0.5 < overall["auc"] <= 1.0
    json.dumps(report, default=float)
    text = report_markdown(report, "synthetic")
    assert "| **all images** | 12 |" in text and "| fold 2 |" in text


def test_report_adds_sauc_without_centerbias_when_given(finished):
    """Given held-out densities without centre bias, the report scores the paper's benchmark-style sAUC on
    them: on the held-out densities themselves it equals their sAUC, on flat ones it is 0.5."""
    from deepgaze_jax.crossvalidation import load_heldout

    data, workdir, _ = finished
    original = np.tile([768, 1024], (12, 1))
    heldout = load_heldout(workdir, 3)
    same = crossval_report(workdir, data.fixations, original, CONFIG.cell, num_folds=3, seed=CV_SEED, progress=False,
                           heldout_no_centerbias=heldout)  # fmt: skip
    for part in [same["overall"], same["paper_subset_1024x768"], *same["folds"]]:
        assert part["sauc_no_centerbias"] == pytest.approx(part["sauc"])
    flat = {i: np.full(g.shape, -np.log(g.size), np.float32) for i, g in heldout.items()}
    report = crossval_report(workdir, data.fixations, original, CONFIG.cell, num_folds=3, seed=CV_SEED, progress=False,
                             heldout_no_centerbias=flat)  # fmt: skip
    assert report["overall"]["sauc_no_centerbias"] == pytest.approx(0.5)
    assert report["overall"]["sauc"] == same["overall"]["sauc"]
    text = report_markdown(report, "synthetic")
    assert "sAUC without centre bias |" in text and "| 0.500 |" in text
    assert "without centre bias |" not in report_markdown(crossval_report(
        workdir, data.fixations, original, CONFIG.cell, num_folds=3, seed=CV_SEED, progress=False), "synthetic")
    with pytest.raises(ValueError, match="lacks 1 image"):
        crossval_report(workdir, data.fixations, original, CONFIG.cell, num_folds=3, seed=CV_SEED, progress=False,
                        heldout_no_centerbias={i: g for i, g in heldout.items() if i != 5})  # fmt: skip
