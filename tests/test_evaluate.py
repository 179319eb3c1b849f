"""The evaluate command on a small generated dataset in the NUS fixations.mat layout."""

import argparse
import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

import deepgaze_jax
from deepgaze_jax import evaluate
from deepgaze_jax.data.nus_mat import load_nus_mat

SIZES = [(48, 64), (64, 48), (48, 64), (60, 80)]  # (height, width)


@pytest.fixture(scope="module")
def nus_dataset(tmp_path_factory):
    """4 images, 3 observers looking near one image-specific spot; observer 2 makes one fixation
    on image 0 (MATLAB scalars) and none on image 1 (empty arrays)."""
    root = tmp_path_factory.mktemp("nus")
    (root / "stimuli").mkdir()
    rng = np.random.default_rng(0)
    entries = np.zeros(len(SIZES), dtype=[("img", object), ("subjects", object)])
    for i, (h, w) in enumerate(SIZES):
        name = f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "stimuli" / name)
        spot = rng.uniform([10, 10], [w - 10, h - 10])
        subjects = np.empty((3, 1), dtype=object)
        for s in range(3):
            count = {(0, 2): 1, (1, 2): 0}.get((i, s), 6)
            xy = np.clip(spot + rng.normal(0, 3, (count, 2)), 1, [w, h])  # MATLAB pixels 1..W
            subjects[s, 0] = {"fix_x": xy[:, 0], "fix_y": xy[:, 1], "fix_duration": np.full(count, 250.0)}
        entries[i] = (name, subjects)
    scipy.io.savemat(root / "fixations.mat", {"fixations": entries})
    return root


def parse(argv):
    parser = argparse.ArgumentParser()
    evaluate.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_writes_report(nus_dataset, tmp_path, capsys):
    out = tmp_path / "report" / "report.json"
    args = parse([
        "evaluate", "--stimuli", str(nus_dataset / "stimuli"), "--fixations", str(nus_dataset / "fixations.mat"),
        "--model", "centerbias", "--out", str(out), "--save-centerbias", str(tmp_path / "cb.npz"), "--no-progress",
    ])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "goldstandard" in printed and "ll_bits" in printed

    report = json.loads(out.read_text())
    assert report["num_images"] == 4 and report["num_fixations"] == 4 * 3 * 6 - 5 - 6
    assert report["mode"] == "paper" and report["model"] == "centerbias"
    assert list(report["scores"]) == ["uniform", "centerbias", "goldstandard"]
    keys = {"ll_bits", "ll_bits_imgavg", "ig_bits", "ig_explained_pct", "auc", "auc_imgavg", "auc_judd", "sauc",
            "nss", "cc", "kl_nats", "sim", "baseline_ll_bits", "gold_ll_bits"}  # fmt: skip
    for name in ("uniform", "centerbias"):
        assert keys <= set(report["scores"][name])
        assert all(np.isfinite(v) for v in report["scores"][name].values())
    assert report["scores"]["uniform"]["ll_bits"] == pytest.approx(0.0, abs=1e-6)
    assert report["scores"]["uniform"]["auc"] == pytest.approx(0.5)
    gold = report["scores"]["goldstandard"]
    assert gold["ll_bits"] > report["scores"]["centerbias"]["ll_bits"] > 0  # observers agree on each image
    assert gold["ig_explained_pct"] == 100.0
    assert report["scores"]["centerbias"]["ig_bits"] == pytest.approx(0.0, abs=1e-9)
    assert set(report["centerbias_fit"]) == {"bandwidth_rel", "uniform_weight"}
    assert set(report["goldstandard_fit"]) == {"bandwidth_rel_long_side", "kde_weight", "centerbias_weight", "uniform_weight"}
    assert report["per_image"]["image"] == [f"img{i}.jpg" for i in range(4)]
    assert len(report["per_image"]["centerbias"]["auc"]) == 4 and len(report["per_image"]["goldstandard"]["ll_bits"]) == 4
    assert (tmp_path / "cb.npz").exists()


def test_evaluate_dataset_with_a_model(nus_dataset, monkeypatch):
    """A model that knows the fixations' spot explains more than the centre bias; the --model
    path goes through deepgaze_jax.load_model / predict_density (faked here)."""
    dataset = load_nus_mat(nus_dataset / "stimuli", nus_dataset / "fixations.mat")
    fixations = dataset.fixations.rescaled([(384, 512) if w >= h else (512, 384) for h, w in SIZES])
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
    report = evaluate.evaluate_dataset(dataset, evaluate.load_image_model("some.npz"), progress=False)
    assert calls[:4] == [(384, 512, 3), (512, 384, 3), (384, 512, 3), (384, 512, 3)]  # working-space images
    model = report["scores"]["model"]
    assert model["ll_bits"] > report["scores"]["centerbias"]["ll_bits"]
    assert model["ig_explained_pct"] == pytest.approx(100 * model["ig_bits"] / report["scores"]["goldstandard"]["ig_bits"])
    assert model["auc"] > report["scores"]["centerbias"]["auc"]
    assert "model" in evaluate.format_table(report["scores"]).splitlines()[0]
