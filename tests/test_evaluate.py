"""`evaluate_dataset` on a small generated dataset in the NUS fixations.mat layout (`nus_dataset`, conftest)."""


import numpy as np
import pytest

import deepgaze_jax
from deepgaze_jax import evaluate, evaluate_cli
from deepgaze_jax.data.nus_mat import load_nus_mat
from synthetic import NUS_SIZES

def test_evaluate_dataset_with_a_model(nus_dataset, monkeypatch):
    """A model that knows the fixations' spot explains more than the centre bias; the --model
    path goes through deepgaze_jax.load_model / predict_density (faked here)."""
    dataset = load_nus_mat(nus_dataset / "stimuli", nus_dataset / "fixations.mat")
    fixations = dataset.fixations.rescaled([(384, 512) if w >= h else (512, 384) for h, w in NUS_SIZES])
    spots = {i: (fixations.y[fixations.n == i].mean(), fixations.x[fixations.n == i].mean()) for i in range(4)}
    calls = []

    def oracle(params, image):
        i = params[len(calls)]
        calls.append(image.shape)
        rows, cols = np.mgrid[: image.shape[0], : image.shape[1]]
        log_p = -((rows - spots[i][0]) ** 2 + (cols - spots[i][1]) ** 2) / (2 * 20.0**2)
        return (log_p - np.log(np.exp(log_p).sum())).astype(np.float32)

    monkeypatch.setattr(deepgaze_jax, "load_model", lambda spec: [0, 1, 2, 3])
    monkeypatch.setattr(deepgaze_jax, "predict_density", oracle)
    report = evaluate.evaluate_dataset(dataset, evaluate_cli.load_image_model("some.npz"), progress=False)
    assert calls[:4] == [(384, 512, 3), (512, 384, 3), (384, 512, 3), (384, 512, 3)]  # working-space images
    model = report["scores"]["model"]
    assert model["ll_bits"] > report["scores"]["centerbias"]["ll_bits"]
    assert model["ig_explained_pct"] == pytest.approx(100 * model["ig_bits"] / report["scores"]["goldstandard"]["ig_bits"])
    assert model["auc"] > report["scores"]["centerbias"]["auc"]
    assert "model" in evaluate_cli.format_table(report["scores"]).splitlines()[0]
