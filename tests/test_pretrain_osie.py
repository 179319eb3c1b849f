"""experiments.pretrain_osie on a generated OSIE release of ten small images (fake backbone)."""

import functools
import json

import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import input_pipeline, training
from deepgaze_jax.data import osie
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.dataset_training import load_init
from experiments import configs, pretrain_osie, pretraining

NUM_IMAGES = 10  # the smallest release with a stopping part (one in ten)
SIZE = (30, 40)  # (height, width)


@pytest.fixture(scope="module")
def osie_root(tmp_path_factory):
    """Ten OSIE-layout images; 3 eye observers and 3 mouse workers rest near one spot per image."""
    rng = np.random.default_rng(4)
    root = tmp_path_factory.mktemp("osie")
    for folder in ("stimuli", "eye", *osie.MOUSE_SOURCES.values()):
        (root / folder).mkdir()
    entries = []
    for i in range(NUM_IMAGES):
        stem = str(1001 + i)
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(root / "stimuli" / f"{stem}.jpg")
        sy, sx = rng.integers(4, 27), rng.integers(4, 37)
        entries.append((f"{stem}.jpg", [(sx + rng.integers(-2, 3, 4), sy + rng.integers(-2, 3, 4), np.full(4, 200.0))
                                        for _ in range(3)]))
        path = [(sy, sx), (sy + 1, sx), (sy + 1, sx + 1)]  # one slow run: one pseudo-fixation per worker
        for folder in osie.MOUSE_SOURCES.values():
            osie.save_mouse_mat(root / folder / f"{stem}.mat", np.repeat([1, 2, 3], 3), path * 3, [1, 2, 3] * 3)
    save_nus_mat(root / "eye" / "fixations.mat", entries)
    return root


def args(osie_root, tmp_path, *extra):
    """Fake backbone, linear readout, Adam (compiles faster than L-BFGS; the loop is the same), 2 epochs."""
    return ["--data-dir", str(osie_root), "--backbone", "fake", "--readout", "linear", "--optimizer", "adam",
            "--max-epochs", "2", "--cache-dir", str(tmp_path / "cache"), "--workdir", str(tmp_path / "pre"), *extra]


def test_interrupted_run_resumes_and_gives_an_init_for_the_crossvalidation(osie_root, tmp_path, monkeypatch, capsys):
    fit = training.fit
    monkeypatch.setattr(pretraining.training, "fit", functools.partial(fit, stop_at=1))  # killed after epoch 1
    pretrain_osie.main(args(osie_root, tmp_path))
    first = json.loads((tmp_path / "pre" / "history.json").read_text())["val_nll_nats"]
    monkeypatch.setattr(pretraining.training, "fit", fit)
    capsys.readouterr()
    path = pretrain_osie.main(args(osie_root, tmp_path))
    assert "OSIE mouse: resuming from epoch 1" in capsys.readouterr().out
    resumed = json.loads((tmp_path / "pre" / "history.json").read_text())["val_nll_nats"]
    assert len(first) == 2 and len(resumed) == 3 and resumed[:2] == first and np.all(np.isfinite(resumed))
    history = json.loads((tmp_path / "pre" / "history.json").read_text())
    assert np.isfinite(history["stop_centerbias_nll_nats"]) and history["stop_centerbias_nll_nats"] != resumed[0]

    init = load_init(path, configs.model_config("fake", "linear"))
    assert init.num_components == 1 and init.centerbias is not None
    with pytest.raises(ValueError, match="differs from this run in readout_features"):
        load_init(path, configs.model_config("fake", "paper"))
    setup = json.loads((tmp_path / "pre" / "setup.json").read_text())
    assert setup["stop"] == {"num_images": 1, "num_fixations": 12}  # the held-out image's 3 x 4 eye fixations
    assert setup["train"] == {"num_images": 9, "num_fixations": 27}  # 3 mouse pseudo-fixations on each
    with pytest.raises(ValueError, match="different pretraining run"):
        pretrain_osie.main(args(osie_root, tmp_path, "--fixations", "eye"))


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_missing_osie_says_how_to_fix(tmp_path, monkeypatch, capsys, how):
    empty = tmp_path / "nothing"
    empty.mkdir()
    argv = ["--workdir", str(tmp_path / "pre")]
    if how == "flag":
        argv += ["--data-dir", str(empty)]
    else:
        monkeypatch.setenv(osie.OSIE_ENV, str(empty))
    with pytest.raises(SystemExit) as exit_info:
        pretrain_osie.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"OSIE folder {empty}" in err and "lacks stimuli" in err
    assert "--data-dir" in err and osie.OSIE_ENV in err
    assert not (tmp_path / "pre").exists()


def test_stop_split_is_a_seeded_tenth():
    train, stop = pretrain_osie.stop_split(700, seed=0)
    assert len(stop) == 70 and np.array_equal(np.sort(np.concatenate([train, stop])), np.arange(700))
    assert np.array_equal(stop, pretrain_osie.stop_split(700, seed=0)[1])
    assert not np.array_equal(stop, pretrain_osie.stop_split(700, seed=1)[1])


def test_both_trains_on_mouse_and_eye_fixations_as_distinct_observers():
    sizes = [(30, 40), (30, 40)]
    mouse, _ = Fixations.create([1.0, 2.0], [3.0, 4.0], [0, 1], sizes, subject=[0, 1])
    eye, _ = Fixations.create([5.0, 6.0, 7.0], [8.0, 9.0, 10.0], [1, 1, 0], sizes, subject=[0, 1, -1], duration=[1, 2, 3])
    both = pretrain_osie.training_fixations("both", eye, mouse)
    np.testing.assert_array_equal(both.x, [1, 2, 5, 6, 7])
    np.testing.assert_array_equal(both.n, [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(both.subject, [0, 1, 2, 3, -1])
    assert pretrain_osie.training_fixations("eye", eye, mouse) is eye


def test_thinned_keeps_at_most_so_many_fixations_of_each_image_and_every_image():
    n = np.repeat([0, 1, 2], [5, 2, 7])
    fixations, _ = Fixations.create(np.arange(len(n), dtype=float), np.zeros(len(n)), n, [(10, 20)] * 4)
    thin = pretraining.thinned(fixations, 3)
    np.testing.assert_array_equal(thin.counts_per_image(), [3, 2, 3, 0])
    assert set(thin.x[thin.n == 0]) < {0, 1, 2, 3, 4} and thin.num_images == 4
    assert not np.array_equal(thin.x, pretraining.thinned(fixations, 3, seed=1).x)


def test_centerbias_nll_is_zero_for_uniform_and_minus_the_log_gain_of_a_peak():
    counts = np.zeros((2, 2, 4), np.float32)
    counts[0, 1, 2], counts[1, 0, 0] = 3.0, 1.0  # 4 fixations on 2 images of 8 cells
    uniform = np.full((2, 2, 4), -np.log(8.0), np.float32)
    group = input_pipeline.ShapeGroup(np.zeros((2, 1, 1, 1)), uniform, counts, np.ones(2, bool))
    assert pretraining.centerbias_nll([group]) == pytest.approx(0.0, abs=1e-6)
    peaked = np.full((2, 2, 4), np.log(0.3 / 7), np.float32)
    peaked[0, 1, 2] = peaked[1, 0, 0] = np.log(0.7)
    group = input_pipeline.ShapeGroup(np.zeros((2, 1, 1, 1)), peaked, counts, np.ones(2, bool))
    assert pretraining.centerbias_nll([group]) == pytest.approx(-np.log(0.7 * 8), rel=1e-5)
