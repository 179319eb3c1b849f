import json

import numpy as np

from deepgaze_jax.report import crossval_report, report_markdown
from synthetic import CONFIG


def test_report_scores_per_fold_overall_and_paper_subset(finished):
    data, workdir, _ = finished
    original = np.tile([768, 1024], (12, 1))
    original[::2] = [600, 800]
    report = crossval_report(workdir, data.fixations, original, CONFIG.cell, num_folds=3, seed=0, progress=False)
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
