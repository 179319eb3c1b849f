"""The evaluate command on the generated NUS-layout dataset (`nus_dataset`, conftest) and a CSV dataset."""

import argparse
import csv
import json

import jax
import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import ModelConfig, cli, evaluate, evaluate_cli, init_params, save_model
from deepgaze_jax.data.formats import load_fixations


def parse(argv):
    parser = argparse.ArgumentParser()
    evaluate_cli.add_parser(parser.add_subparsers())
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
    assert report["mode"] == "paper" and report["model"] == ["centerbias"]
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


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory):
    """Three images and a CSV table of 8 fixations on each, near an image-specific spot."""
    root = tmp_path_factory.mktemp("csv")
    (root / "stimuli").mkdir()
    rng = np.random.default_rng(1)
    lines = ["image,x,y,subject"]
    for i, (h, w) in enumerate([(48, 64), (64, 48), (48, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "stimuli" / f"im{i}.png")
        spot = rng.uniform([8, 8], [w - 8, h - 8])
        for k, (x, y) in enumerate(np.clip(spot + rng.normal(0, 4, (8, 2)), 0, [w - 0.5, h - 0.5])):
            lines.append(f"im{i}.png,{x:.2f},{y:.2f},s{k % 2}")
    (root / "fixations.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Two different fake-backbone models."""
    folder = tmp_path_factory.mktemp("models")
    paths = [folder / f"fake_{seed}.npz" for seed in (0, 1)]
    for seed, path in zip((0, 1), paths):
        save_model(init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(seed)), path)
    return paths


def test_cli_ensemble_on_a_csv_dataset_writes_per_image_rows(csv_dataset, model_files, tmp_path, capsys):
    """Two --model files are averaged in probability: by Jensen the ensemble's LL is at least the mean of
    the members' LLs, and it is neither member's."""
    out, per_image = tmp_path / "report.json", tmp_path / "rows" / "per_image.csv"
    argv = ["evaluate", "--stimuli", str(csv_dataset / "stimuli"), "--fixations", str(csv_dataset / "fixations.csv"),
            "--model", str(model_files[0]), "--model", str(model_files[1]), "--out", str(out),
            "--per-image", str(per_image), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "sauc_no_centerbias" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["model"] == [str(p) for p in model_files] and report["num_fixations"] == 24
    ensemble = report["scores"]["model"]
    assert np.isfinite(ensemble["sauc_no_centerbias"]) and 0 <= ensemble["sauc_no_centerbias"] <= 1

    dataset = load_fixations(csv_dataset / "fixations.csv", csv_dataset / "stimuli")
    from deepgaze_jax.model import load_model

    members = [
        evaluate.evaluate_dataset(dataset, evaluate_cli.image_model(load_model(p)), progress=False)["scores"]["model"]
        for p in model_files
    ]
    # 1e-5 bits: float32 rounding of log densities near -8 nats, whose summation order differs between CPUs
    assert ensemble["ll_bits"] >= np.mean([m["ll_bits"] for m in members]) - 1e-5
    assert all(abs(ensemble["ll_bits"] - m["ll_bits"]) > 1e-6 for m in members)

    with per_image.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["im0.png", "im1.png", "im2.png"]
    assert [int(r["num_fixations"]) for r in rows] == [8, 8, 8]
    for key in ("model_ll_bits", "model_ig_bits", "model_auc", "model_sauc", "model_sauc_no_centerbias", "model_nss"):
        np.testing.assert_allclose([float(r[key]) for r in rows], report["per_image"]["model"][key[len("model_"):]])
    assert not list(per_image.parent.glob(".*tmp"))  # written atomically, no leftovers


def _broken_dataset(root, case):
    """A stimuli folder and a fixations.mat that is wrong in the way ``case`` names."""
    from scipy.io import savemat

    from deepgaze_jax.data.nus_mat import save_nus_mat

    (root / "stimuli").mkdir()
    Image.new("RGB", (64, 48)).save(root / "stimuli" / "a.png")
    mat = root / "fixations.mat"
    subjects = {
        "no_fixations": [([], [], []), ([], [], [])],
        "out_of_bounds": [([10, 400], [10, 20], [200, 200])],
    }.get(case, [([10, 20], [10, 20], [200, 200])])
    save_nus_mat(mat, [("missing.png" if case == "missing_stimulus" else "a.png", subjects)])
    if case == "bad_field":
        entries = np.empty((1, 1), dtype=object)
        entries[0, 0] = {"img": "a.png", "observers": np.zeros((1, 1))}
        savemat(mat, {"fixations": entries})
    if case == "unreadable":
        mat.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 3)
    return root


@pytest.mark.parametrize(
    "case, message",
    [("no_fixations", "no fixations"), ("out_of_bounds", "out of bounds"), ("missing_stimulus", "missing.png"),
     ("bad_field", "subjects"), ("unreadable", "not a readable MATLAB"), ("no_file", "does not exist")],
)  # fmt: skip
def test_bad_input_is_one_line_on_stderr(tmp_path, capsys, case, message):
    """Each bad input ends with exit status 1 and one line ``deepgaze-jax evaluate: ...``; no table, no report."""
    root = _broken_dataset(tmp_path, case)
    fixations = root / ("nothing.mat" if case == "no_file" else "fixations.mat")
    out = tmp_path / "report.json"
    argv = ["evaluate", "--stimuli", str(root / "stimuli"), "--fixations", str(fixations), "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # the error comes before any scoring
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepgaze-jax evaluate: ") and message in lines[0]
    assert not out.exists()


def test_bad_model_file_is_one_line_on_stderr(nus_dataset, tmp_path, capsys):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not a zip")
    for model in (str(tmp_path / "absent.npz"), str(tmp_path / "broken.npz")):
        argv = ["evaluate", "--stimuli", str(nus_dataset / "stimuli"), "--fixations", str(nus_dataset / "fixations.mat"),
                "--model", model, "--out", str(tmp_path / "r.json"), "--no-progress"]  # fmt: skip
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("deepgaze-jax evaluate: ") and model in err[0]


def test_centerbias_fit_without_a_model_is_refused(nus_dataset, tmp_path, capsys):
    argv = ["evaluate", "--stimuli", str(nus_dataset / "stimuli"), "--fixations", str(nus_dataset / "fixations.mat"),
            "--centerbias", "fit", "--out", str(tmp_path / "r.json"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 1
    assert "--model" in capsys.readouterr().err
