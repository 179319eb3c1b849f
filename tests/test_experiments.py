"""The experiment scripts end to end on tiny generated MIT1003 / SALICON fixtures (fake backbone)."""

import json

import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.data.salicon import save_salicon_mat
from deepgaze_jax.model import load_model

from experiments import crossval_mit1003, ensemble_mit1003, pretrain_salicon


def smooth_image(rng, h, w):
    """A small-to-encode image with some structure for the fake backbone."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 6, 3)
    return (127 + 120 * np.sin(6 * xx[..., None] + 4 * yy[..., None] + phase)).astype(np.uint8)


@pytest.fixture
def mit_root(tmp_path):
    """Six MIT1003-layout images (two of the paper's 1024x768) and 15 observers each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mit"
    (root / "stimuli").mkdir(parents=True)
    entries = []
    for i, (h, w) in enumerate([(768, 1024), (150, 200), (200, 150), (768, 1024), (150, 200), (150, 200)]):
        name = f"img{i}.jpg"
        Image.fromarray(smooth_image(rng, h, w)).save(root / "stimuli" / name)
        subjects = []
        for _ in range(15):
            k = int(rng.integers(1, 4))
            subjects.append((rng.uniform(1, w, k), rng.uniform(1, h, k), rng.uniform(100, 300, k)))
        entries.append((name, subjects))
    save_nus_mat(root / "fixations.mat", entries)
    return root


@pytest.fixture
def salicon_root(tmp_path):
    """SALICON release layout: 3 train and 2 val images of 48 x 64 with 3 observers."""
    rng = np.random.default_rng(1)
    root = tmp_path / "salicon"
    size = (48, 64)
    for split, prefix, count in (("train", "COCO_train2014_", 3), ("val", "COCO_val2014_", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "fixations" / "2017" / split).mkdir(parents=True)
        for k in range(count):
            name = f"{prefix}{k:012d}"
            Image.fromarray(smooth_image(rng, *size)).save(root / "images" / split / f"{name}.jpg")
            observers = [rng.integers(1, [size[1] + 1, size[0] + 1], size=(5, 2)).astype(float) for _ in range(3)]
            gaze = [(o, np.arange(len(o)) * 10.0, o) for o in observers]
            save_salicon_mat(root / "fixations" / "2017" / split / f"{name}.mat", name, size, gaze)
    return root


def common_args(tmp_path):
    """Fake backbone, linear readout (DeepGaze I style; the paper's readout is covered by the unit tests)."""
    return ["--backbone", "fake", "--readout", "linear", "--max-epochs", "1", "--cache-dir", str(tmp_path / "cache")]


def test_pretrain_then_crossvalidate(tmp_path, monkeypatch, mit_root, salicon_root):
    model_path = pretrain_salicon.main(
        common_args(tmp_path) + ["--salicon-dir", str(salicon_root), "--tfds-dir", str(tmp_path / "tfds"),
                                 "--mit1003-dir", str(mit_root), "--workdir", str(tmp_path / "pre")]
    )
    pretrained = load_model(model_path, backbone_weights={})
    assert pretrained.num_components == 1 and pretrained.config.backbone == "fake"
    assert json.loads((tmp_path / "pre" / "history.json").read_text())["val_nll_nats"][0] is not None

    workdir = tmp_path / "cv"
    report = crossval_mit1003.main(
        common_args(tmp_path) + ["--init", str(model_path), "--data-dir", str(mit_root), "--folds", "2",
                                 "--workdir", str(workdir)]
    )
    assert report["overall"]["num_images"] == 6 and report["paper_subset_1024x768"]["num_images"] == 2
    combined = load_model(workdir / "mixture.npz", backbone_weights={})
    assert combined.num_components == 2 and combined.config.readout_features == (1,)
    assert set(combined.head["params"]["readout"]) == {"layer0"}
    markdown = (workdir / "report.md").read_text()
    assert "| fold 1 |" in markdown
    assert len(report["figures"]) == 4 and "![" in markdown
    for figure in report["figures"]:
        assert (workdir / figure["file"]).stat().st_size > 10_000 and f"]({figure['file']})" in markdown
    assert json.loads((workdir / "report.json").read_text())["command"]["init"] == str(model_path)


def test_pretrain_without_salicon_fails_with_instructions(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain_salicon.main(["--tfds-dir", str(tmp_path / "tfds"), "--workdir", str(tmp_path / "pre")])
    assert exit_info.value.code == 1
    assert "SALICON needs a manual_dir" in capsys.readouterr().err


def test_ensemble_of_two_crossvalidations(tmp_path, monkeypatch, mit_root):
    runs = []
    for readout in ("linear", "paper"):
        runs.append(tmp_path / readout)
        args = common_args(tmp_path) + ["--no-pretrain", "--data-dir", str(mit_root), "--folds", "2", "--workdir", str(runs[-1])]
        args[args.index("--readout") + 1] = readout
        crossval_mit1003.main(args)
    members = [json.loads((run / "report.json").read_text())["overall"] for run in runs]
    report = ensemble_mit1003.main([*map(str, runs), "--data-dir", str(mit_root), "--workdir", str(tmp_path / "ens")])
    assert report["overall"]["num_images"] == 6
    assert report["overall"]["ll_bits"] >= min(m["ll_bits"] for m in members)
    assert report["command"]["runs"] == [str(r) for r in runs]
    markdown = (tmp_path / "ens" / "report.md").read_text()
    assert "ensemble of fake + fake" in markdown and "| fold 1 |" in markdown and "![" in markdown
