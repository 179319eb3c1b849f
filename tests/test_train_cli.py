"""``deepgaze-jax train`` end to end on a small CSV dataset (fake backbone): train, resume, use, fine-tune."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax.cli import main
from deepgaze_jax.model import load_model
from deepgaze_jax.predict import predict_density

# With the default --fold-seed each of the 3 folds holds out one portrait and one landscape image:
# every fold trains on the same shapes, so the folds share one compiled program.
SIZES = [(48, 64), (64, 48), (64, 48), (48, 64), (64, 48), (48, 64)]


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory):
    """Six images and a table of 0-based fixations clustered on a bright blob of each."""
    root = tmp_path_factory.mktemp("own")
    (root / "stimuli").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,x,y,subject"]
    for i, (h, w) in enumerate(SIZES):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        yy, xx = np.mgrid[0:h, 0:w]
        blob = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
        Image.fromarray(np.repeat(blob[..., None], 3, axis=2).astype(np.uint8)).save(root / "stimuli" / f"im{i}.png")
        for s in range(4):
            for x, y in zip(np.clip(rng.normal(cx, 3, 6), 0, w - 1), np.clip(rng.normal(cy, 3, 6), 0, h - 1)):
                rows.append(f"im{i}.png,{x:.2f},{y:.2f},s{s}")
    (root / "fixations.csv").write_text("\n".join(rows) + "\n")
    return root


def train(root, out, *extra):
    return main([
        "train", "--stimuli", str(root / "stimuli"), "--fixations", str(root / "fixations.csv"), "--out", str(out),
        "--backbone", "fake", "--folds", "3", "--max-epochs", "4", "--cache-dir", str(out.parent / "cache"), *extra,
    ])


@pytest.fixture(scope="module")
def trained(csv_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mine.npz"
    assert train(csv_dataset, out) == 0
    return out


def test_train_writes_a_model_and_the_report(trained, csv_dataset):
    model = load_model(trained)
    assert model.config.backbone == "fake" and model.num_components == 3  # one model per fold
    density = predict_density(model, csv_dataset / "stimuli" / "im0.png")
    assert density.shape == SIZES[0] and abs(np.logaddexp.reduce(density.ravel())) < 1e-4
    report = json.loads((trained.with_suffix(".run") / "report.json").read_text())
    assert set(report["per_image"]["index"]) == set(range(len(SIZES)))  # every image scored held out
    assert np.isfinite(report["overall"]["ll_bits"]) and report["command"]["folds"] == 3
    assert "paper_subset_1024x768" not in report  # no 1024x768 images here: no such row
    markdown = (trained.with_suffix(".run") / "report.md").read_text()
    assert "paper subset" not in markdown
    assert report["stopping"] == "inner" and "one of its training parts" in markdown
    assert 0.0 <= report["overall"]["sauc_no_centerbias"] <= 1.0 and "sAUC without centre bias" in markdown
    assert [fold["stopping_part"] for fold in report["folds"]] == [1, 2, 0]


def test_rerun_resumes_and_skips_finished_folds(trained, csv_dataset, caplog):
    before = trained.read_bytes()
    with caplog.at_level(logging.INFO):
        assert train(csv_dataset, trained) == 0
    assert sum("done, skipping" in r.getMessage() for r in caplog.records) == 3
    assert trained.read_bytes() == before  # the same folds give the same mixture


def test_init_from_a_model_file_fine_tunes_it(trained, csv_dataset, tmp_path):
    out = tmp_path / "tuned.npz"
    assert train(csv_dataset, out, "--init", str(trained)) == 0
    assert load_model(out).num_components == 3


def test_outputs_work_with_predict_evaluate_and_export(trained, csv_dataset, tmp_path):
    stimuli, fixations = str(csv_dataset / "stimuli"), str(csv_dataset / "fixations.csv")
    assert main(["predict", f"{stimuli}/im1.png", "--model", str(trained), "--out", str(tmp_path / "p")]) == 0
    assert main(["evaluate", "--stimuli", stimuli, "--fixations", fixations, "--model", str(trained),
                 "--out", str(tmp_path / "e.json")]) == 0
    assert main(["export", "--stimuli", stimuli, "--model", str(trained), "--out", str(tmp_path / "x")]) == 0
    assert len(list((tmp_path / "x" / "with_centerbias").glob("*.jpg"))) == len(SIZES)


def test_bad_input_is_one_line_and_writes_nothing(csv_dataset, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x,y\nim0.png,1000,3\n")
    out = tmp_path / "m.npz"
    assert main(["train", "--stimuli", str(csv_dataset / "stimuli"), "--fixations", str(bad), "--out", str(out),
                 "--backbone", "fake"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deepgaze-jax train:") and "outside the image" in err and not out.exists()
    assert train(csv_dataset, tmp_path / "m2.npz", "--init", "lite0") == 1  # a Lite0 model cannot start a fake one
    assert "--init lite0 is a efficientnet_lite0 model that differs from this run in backbone" in capsys.readouterr().err
    assert train(csv_dataset, tmp_path / "m2.npz", "--init", "default") == 1
    assert "--init default is an ensemble of" in capsys.readouterr().err and not (tmp_path / "m2.npz").exists()
