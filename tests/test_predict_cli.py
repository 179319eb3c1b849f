import os
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import ModelConfig, cli, init_params, save_model
from deepgaze_jax.examples import EXAMPLE_NAMES, example_paths
from deepgaze_jax.predict_cli import output_stems, unique_paths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A saved fake-backbone model (`fake_backbone` registers the backbone on import)."""
    path = tmp_path_factory.mktemp("model") / "fake_model.npz"
    save_model(init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(0)), path)
    return path


def write_image(path: Path, seed: int, size=(64, 96)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """Fake-backbone files in place of the bundled lite0 and lite2, with the default lite0+lite2."""
    from deepgaze_jax import model

    monkeypatch.setattr(model, "ASSETS", tmp_path / "assets")
    monkeypatch.setattr(model, "DEFAULT_MODEL", "lite0+lite2")
    (tmp_path / "assets").mkdir()
    for seed, name in enumerate(("lite0", "lite2")):
        config = ModelConfig(backbone="fake", readout_features=(4, 1) if seed else (1,))
        save_model(init_params(config, jax.random.PRNGKey(seed)), model.bundled_model_path(name))


def predict(model_file, out: Path, *argv: str) -> int:
    return cli.main(["predict", *argv, "--model", str(model_file), "--out", str(out)])


def test_example_photographs_are_small_jpegs_with_a_licence():
    readme = (example_paths()[0].parent / "README.md").read_text()
    for path in example_paths():
        with Image.open(path) as img:
            assert img.format == "JPEG" and min(img.size) >= 256
        assert path.stat().st_size < 200_000
        assert path.name in readme
    assert readme.count("CC0") >= len(EXAMPLE_NAMES)


def test_predict_example(tmp_path, model_file):
    assert predict(model_file, tmp_path / "out", "--example") == 0
    for name in EXAMPLE_NAMES:
        log_density = np.load(tmp_path / "out" / f"{name}_log_density.npy")
        assert log_density.shape == Image.open(next(p for p in example_paths() if p.stem == name)).size[::-1]
        assert abs(np.logaddexp.reduce(log_density.astype(np.float64), axis=None)) < 1e-4
        assert (tmp_path / "out" / f"{name}_density.png").is_file()


def test_predict_without_images_says_what_to_give(tmp_path, model_file, capsys):
    assert predict(model_file, tmp_path / "out") == 2
    assert "--example" in capsys.readouterr().err


def test_same_names_in_different_folders_are_kept_apart(tmp_path, model_file):
    first, second = write_image(tmp_path / "a" / "x.png", 0), write_image(tmp_path / "b" / "x.png", 1)
    assert predict(model_file, tmp_path / "out", str(first), str(second), "--no-png") == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy"))
    assert written == ["a/x_log_density.npy", "b/x_log_density.npy"]
    a, b = (np.load(tmp_path / "out" / name) for name in written)
    assert not np.array_equal(a, b)  # two different images, two different densities


def test_output_stems_are_distinct():
    paths = unique_paths([Path("d/x.jpg"), Path("d/x.png"), Path("d/x_png.gif"), Path("d/X.jpg"), Path("d/./x.jpg")])
    assert len(paths) == 4  # d/./x.jpg is d/x.jpg
    stems = [s.as_posix() for s in output_stems(paths)]
    assert stems == ["x", "x_png", "x_png_gif", "X_jpg"]
    nested = output_stems(unique_paths([Path("top/a/x.jpg"), Path("top/b/c/x.jpg"), Path("top/y.jpg")]))
    assert [s.as_posix() for s in nested] == ["a/x", "b/c/x", "y"]


def test_make_demo_needs_nothing_beside_the_checkout():
    # CI runs the suite under `make test`: a nested make would print "Entering/Leaving directory" lines
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = subprocess.run(["make", "--no-print-directory", "-n", "demo", "VENV=/nonexistent"], cwd=REPO,
                             capture_output=True, text=True, env=env)
    assert dry_run.returncode == 0, dry_run.stderr
    demo_line = dry_run.stdout.strip().splitlines()[-1]
    assert "predict --example" in demo_line
    assert "shared" not in (REPO / "Makefile").read_text()


def test_predict_uses_the_default_ensemble(tmp_path, bundled):
    from deepgaze_jax import load_model, predict_density

    image = write_image(tmp_path / "in" / "x.png", seed=3)
    assert cli.main(["predict", str(image), "--out", str(tmp_path / "out"), "--no-png"]) == 0
    got = np.load(tmp_path / "out" / "x_log_density.npy")
    np.testing.assert_allclose(got, predict_density(load_model(), image), atol=1e-6)
    lite0 = predict_density(load_model("lite0"), image)
    assert np.abs(got - lite0).max() > 1e-3  # the ensemble is not its first member alone
    assert cli.main(["predict", str(image), "--model", "lite0", "--out", str(tmp_path / "fast"), "--no-png"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "fast" / "x_log_density.npy"), lite0, atol=1e-6)
    argv = ["predict", str(image), "--model", "default", "--model", "lite0", "--out", str(tmp_path / "three"), "--no-png"]
    assert cli.main(argv) == 0  # the default's two members and lite0 again, each weighing a third
    np.testing.assert_allclose(np.load(tmp_path / "three" / "x_log_density.npy"),
                               predict_density([*load_model(), load_model("lite0")], image), atol=1e-6)
