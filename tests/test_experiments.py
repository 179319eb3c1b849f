"""The experiment scripts end to end on tiny generated MIT1003 / SALICON fixtures (fake backbone)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import crossvalidation as cv
from deepgaze_jax.data import mit1003, osie
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.data.osie import save_mouse_mat
from deepgaze_jax.data.salicon import save_salicon_mat
from deepgaze_jax.model import load_model
from deepgaze_jax.training import TrainConfig

from experiments import configs, crossval_mit1003, ensemble_mit1003, model_search, osie_stats, pool_instances, pretrain_salicon


def smooth_image(rng, h, w):
    """A small-to-encode image with some structure for the fake backbone."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 6, 3)
    return (127 + 120 * np.sin(6 * xx[..., None] + 4 * yy[..., None] + phase)).astype(np.uint8)


@pytest.fixture
def mit_root(tmp_path):
    """Six MIT1003-layout images (two of the paper's 1024x768) and 15 observers each, looking near one
    image-specific spot (so that the gold standard beats the centre bias).

    With the default --fold-seed each of the 2 folds holds out one portrait: both folds train on the
    same shapes, so they share compiled programs."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mit"
    (root / "stimuli").mkdir(parents=True)
    entries = []
    for i, (h, w) in enumerate([(768, 1024), (150, 200), (200, 150), (768, 1024), (150, 200), (200, 150)]):
        name = f"img{i}.jpg"
        Image.fromarray(smooth_image(rng, h, w)).save(root / "stimuli" / name)
        spot = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h])
        subjects = []
        for _ in range(15):
            k = int(rng.integers(1, 4))
            x, y = (np.clip(c + rng.normal(0, 0.05 * size, k), 1, size) for c, size in zip(spot, (w, h)))
            subjects.append((x, y, rng.uniform(100, 300, k)))
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
                                 "--workdir", str(workdir), "--stopping", "heldout"]
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
    assert report["stopping"] == "heldout" and "optimistic" in markdown


def test_pretrain_without_salicon_fails_with_instructions(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain_salicon.main(["--tfds-dir", str(tmp_path / "tfds"), "--workdir", str(tmp_path / "pre")])
    assert exit_info.value.code == 1
    assert "SALICON needs a manual_dir" in capsys.readouterr().err


def test_ensemble_of_two_crossvalidations(tmp_path, monkeypatch, mit_root):
    runs = []
    for readout in ("linear", "paper"):
        runs.append(tmp_path / readout)
        args = common_args(tmp_path) + ["--no-pretrain", "--data-dir", str(mit_root), "--folds", "3", "--workdir", str(runs[-1])]
        args[args.index("--readout") + 1] = readout
        crossval_mit1003.main(args)
    members = [json.loads((run / "report.json").read_text())["overall"] for run in runs]
    report = ensemble_mit1003.main([*map(str, runs), "--data-dir", str(mit_root), "--workdir", str(tmp_path / "ens"),
                                    "--cache-dir", str(tmp_path / "cache")])
    # the two runs' reports and the ensemble's scored the same fixations: one gold-standard fit, read back twice
    assert len(list((tmp_path / "cache" / "fits").glob("goldstandard-*.json"))) == 1
    assert report["overall"]["num_images"] == 6 and report["stopping"] == "inner"
    assert report["overall"]["ll_bits"] >= min(m["ll_bits"] for m in members)
    assert all(0.0 <= r["sauc_no_centerbias"] <= 1.0 for r in (*members, report["overall"]))
    assert report["command"]["runs"] == [str(r) for r in runs]
    markdown = (tmp_path / "ens" / "report.md").read_text()
    assert "ensemble of fake + fake" in markdown and "| fold 1 |" in markdown and "![" in markdown


@pytest.fixture
def osie_root(tmp_path):
    """Four OSIE-layout images of 30 x 40; eye (3 observers) and mouse (4 workers) rest on one spot per image."""
    rng = np.random.default_rng(2)
    root = tmp_path / "osie"
    for folder in ("stimuli", "eye", "mouse_amt", "mouse_lab"):
        (root / folder).mkdir(parents=True)
    spots = [(5, 8), (25, 32), (6, 33), (24, 7)]  # (y, x) MATLAB pixels
    entries = []
    for i, (sy, sx) in enumerate(spots):
        stem = str(1001 + i)
        Image.fromarray(smooth_image(rng, 30, 40)).save(root / "stimuli" / f"{stem}.jpg")
        observers = [(sx + rng.integers(-2, 3, 4), sy + rng.integers(-2, 3, 4), np.full(4, 200.0)) for _ in range(3)]
        entries.append((f"{stem}.jpg", observers))
        for folder in ("mouse_amt", "mouse_lab"):
            subj, yx, order = [], [], []
            for worker in range(1, 5):  # a rest near the spot, a jump to a far corner and a rest there
                path = [(sy, sx), (sy + 1, sx), (sy + 1, sx + 1), (30 - sy, 40 - sx), (30 - sy, 41 - sx)]
                subj += [worker] * len(path)
                yx += path
                order += list(range(1, len(path) + 1))
            save_mouse_mat(root / folder / f"{stem}.mat", subj, yx, order)
    save_nus_mat(root / "eye" / "fixations.mat", entries)
    return root


def test_osie_stats(osie_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(osie_stats, "paper_sizes", np.asarray)  # score at 30 x 40, not 384 x 512: fast
    report = osie_stats.main(["--root", str(osie_root), "--out", str(tmp_path / "stats.json")])
    assert json.loads((tmp_path / "stats.json").read_text())["counts"] == report["counts"]
    eye, amt, lab = report["counts"]
    assert (eye["images"], eye["observers"], eye["fixations"], eye["trajectories"]) == (4, 3, 48, 12)
    assert (amt["samples"], amt["trajectories"], amt["fixations"], amt["fixations_per_trajectory"]) == (80, 16, 32, 2.0)
    assert lab["fixations_per_image_mean"] == 8.0
    rows = {row["model"]: row for row in report["likelihood"]}
    gold = rows["gold standard (other eye observers)"]
    assert gold["ig_of_gold_pct"] == pytest.approx(100.0)
    mouse = rows["KDE of mouse amt pseudo-fixations + centre bias + uniform"]
    assert mouse["ig_bits"] > 0.5  # the mouse rests where the eyes fixate, unlike the centre bias
    assert "## Counts" in capsys.readouterr().out


def test_step_lengths_stay_within_trajectories():
    recording = osie.MouseRecording(
        subject=np.array([1, 1, 1, 2, 2]), x=np.array([0.0, 3, 3, 50, 50]), y=np.array([0.0, 4, 4, 0, 1]),
        order=np.array([1, 2, 3, 1, 2]),
    )
    np.testing.assert_allclose(osie_stats.step_lengths([recording]), [5.0, 0.0, 1.0])
    # bins 1, 1.4, 2, 2.8, 4, 5.7, 8, 11.3, ...: a slow mode decaying onto a plateau of 0.1 (at 8-11.3 px: 0.12)
    density = np.array([5.0, 4, 3, 2, 1, 0.5, 0.12, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.02, 0.01, 0.0])
    assert osie_stats.slow_mode_end(density) == pytest.approx((8.0, 11.31, 0.1), abs=0.01)


def test_model_search_picks_each_fold_on_its_stopping_part(tmp_path, mit_root):
    candidates = {name: configs.Experiment(model=configs.model_config("fake", readout), training=TrainConfig(max_epochs=2),
                                           folds=3)
                  for name, readout in (("linear", "linear"), ("paper", "paper"))}
    out = tmp_path / "docs" / "search.md"
    table = model_search.search(candidates, mit1003.mit1003(mit_root), tmp_path / "search", tmp_path / "cache", out,
                                log=lambda _: None)
    rows = {row["name"]: row for row in table["candidates"]}
    for k, pick in enumerate(table["picks"]):
        assert rows[pick]["stopping_nll_bits_per_fold"][k] == min(r["stopping_nll_bits_per_fold"][k] for r in rows.values())
        for name, row in rows.items():
            history = json.loads((tmp_path / "search" / name / f"fold_{k}" / "history.json").read_text())
            assert history["stopping_part"] == (k + 1) % 3  # a training part of fold k, not the scored part k
            assert row["stopping_nll_bits_per_fold"][k] == history["stopping_nll_bits"]
        for heldout in (cv.HELDOUT, cv.HELDOUT_NO_CB):  # fold k of the picks is fold k of its pick
            got, want = cv.fold_heldout(Path(table["selected_workdir"]), k, heldout), cv.fold_heldout(tmp_path / "search" / pick, k, heldout)
            assert sorted(got) == sorted(want) and all(np.array_equal(got[i], want[i]) for i in got)
    for name in rows:  # Wolfe line search (TrainConfig's default): the folds train at once, as crossval_mit1003's
        assert [p.name for p in (tmp_path / "search" / name / "batched").iterdir()] == ["seeds1_folds_0_1_2"]
    assert table["selected"]["overall"].keys() == set(model_search.SCORE_KEYS)
    assert 0.0 <= table["selected"]["overall"]["sauc_no_centerbias"] <= 1.0
    assert json.loads(out.with_suffix(".json").read_text()) == table
    markdown = out.read_text()
    assert "| linear |" in markdown and "| paper |" in markdown and "| 2 | " in markdown
    assert "Held-out score of the per-fold picks" in markdown and "| the paper's 1024x768 images |" in markdown
    with pytest.raises(ValueError, match="must share"):
        model_search.search({**candidates, "five": configs.Experiment(model=configs.model_config("fake", "linear"),
                                                                      training=TrainConfig(), folds=5)},
                            mit1003.mit1003(mit_root), tmp_path / "s2", tmp_path / "cache", out)


def test_model_search_candidates_are_single_configs():
    assert model_search.parse([]).config == ["lite0", "lite2", "lite0_inner", "lite1_inner", "lite2_inner", "lite0_iie",
                                             "lite0_taps", "lite0_iie_taps", "lite1_taps", "lite2_taps",
                                             "lite0_taps_osie", "lite1_taps_osie", "lite2_taps_osie",
                                             "lite0_taps_osie_x3", "lite1_taps_osie_x3", "lite2_taps_osie_x3",
                                             "lite0_taps_osie_eye_x3", "lite1_taps_osie_eye_x3", "lite2_taps_osie_eye_x3",
                                             "lite0_taps_osie_eye_x3b", "lite1_taps_osie_eye_x3b", "lite2_taps_osie_eye_x3b"]
    for argv in (["--config", "lite0"], ["--config", "lite0", "--config", "ensemble"], ["--config", "lite0"] * 2,
                 ["--config", "lite0_taps", "--config", "lite0_taps_osie_eye_x6"]):
        with pytest.raises(SystemExit):
            model_search.parse(argv)


def test_a_candidate_without_its_pretraining_says_which_command_makes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's init is relative: runs/pretrain_osie_lite0_taps/model.npz, not made here
    name = "lite0_taps_osie"
    with pytest.raises(FileNotFoundError, match=f"run the pretraining in experiments/configs/{name}.py"):
        model_search.crossvalidate_candidate(name, configs.get(name), None, tmp_path / "w", tmp_path / "c", print)


def test_crossval_of_a_config_without_its_pretraining_says_which_command_makes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="run the pretraining in experiments/configs/lite1_taps_osie.py"):
        crossval_mit1003.main(["--config", "lite1_taps_osie", "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


def test_a_bundled_init_name_is_never_missing():
    configs.check_init("lite0", None)
    configs.check_init(None, None)
    with pytest.raises(FileNotFoundError, match="the run that writes it"):
        configs.check_init("no/such/model.npz", None)


def test_pool_instances_of_two_crossvalidations(tmp_path, mit_root):
    runs = [tmp_path / f"seed{seed}" for seed in (0, 1)]
    for seed, run in zip((0, 1), runs):
        crossval_mit1003.main(common_args(tmp_path) + ["--no-pretrain", "--data-dir", str(mit_root), "--folds", "3",
                                                       "--init-seed", str(seed), "--workdir", str(run)])
    report = pool_instances.main([*map(str, runs), "--data-dir", str(mit_root), "--workdir", str(tmp_path / "pool"),
                                  "--cache-dir", str(tmp_path / "cache")])
    assert report["overall"]["num_images"] == 6 and report["stopping"] == "inner"
    maps = [cv.load_heldout(w, 3) for w in (*runs, tmp_path / "pool")]
    for i, pooled in maps[2].items():  # each image: the two runs' instances averaged in probability
        np.testing.assert_allclose(pooled, np.logaddexp(maps[0][i], maps[1][i]) - np.log(2), atol=1e-5)
    assert all("stopping_nll_bits" in fold for fold in report["folds"])
    assert load_model(tmp_path / "pool" / "mixture.npz", backbone_weights={}).num_components == 6
    assert "2 instances per fold pooled" in (tmp_path / "pool" / "report.md").read_text()
    assert report["command"]["pool_of"] == [str(run) for run in runs]


def test_pool_instances_says_which_runs_to_make_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="run their crossval_mit1003 commands first"):
        pool_instances.main(["--config", "lite0_taps_osie_eye_x6"])
    with pytest.raises(SystemExit):  # a config that pools nothing
        pool_instances.main(["--config", "lite0_taps"])
