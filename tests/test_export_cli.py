"""``deepgaze-jax export``: equalised maps with and without centre bias, and the HDF5 of log densities."""

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.special import logsumexp

from deepgaze_jax.cli import main
from deepgaze_jax.export import HDF5_TYPE, equalize
from deepgaze_jax.model import load_model
from deepgaze_jax.predict import predict_density


@pytest.fixture
def stimuli(tmp_path):
    folder = tmp_path / "stimuli"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in [("a.jpg", (48, 64, 3)), ("b.png", (64, 48, 3))]:
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_export_writes_maps_and_hdf5(stimuli, tmp_path):
    out = tmp_path / "out"
    assert main(["export", "--stimuli", str(stimuli), "--out", str(out)]) == 0
    model = load_model()
    with h5py.File(out / "log_densities.hdf5") as f:
        assert f.attrs["type"] == HDF5_TYPE
        assert sorted(f) == ["a.jpg", "b.png"]
        a = f["a.jpg"][()]
    assert a.dtype == np.float32 and a.shape == (48, 64)
    assert abs(logsumexp(a)) < 1e-4
    np.testing.assert_allclose(a, predict_density(model, stimuli / "a.jpg"), atol=1e-5)
    for subdir, prior in [("with_centerbias", None), ("without_centerbias", "uniform")]:
        with Image.open(out / subdir / "b.jpg") as img:
            assert img.mode == "L" and img.size == (48, 64)
            expected = equalize(predict_density(model, stimuli / "b.png", centerbias=prior))
            assert np.corrcoef(np.asarray(img, float).ravel(), expected.ravel())[0, 1] > 0.95
    with Image.open(out / "with_centerbias" / "a.jpg") as cb, Image.open(out / "without_centerbias" / "a.jpg") as flat:
        assert np.abs(np.asarray(cb, float) - np.asarray(flat, float)).mean() > 5  # the prior changes the ranking


def test_export_refuses_clashing_stems_and_empty_folders(stimuli, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(stimuli / "a.png")
    assert main(["export", "--stimuli", str(stimuli), "--out", str(tmp_path / "o")]) == 1
    assert "share a stem" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--stimuli", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "no images" in capsys.readouterr().err
    assert not (tmp_path / "o" / "log_densities.hdf5").exists()


def test_export_leaves_no_partial_hdf5_on_a_corrupt_image(stimuli, tmp_path, capsys):
    (stimuli / "c.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["export", "--stimuli", str(stimuli), "--out", str(tmp_path / "o")]) == 1
    assert "c.jpg" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.hdf5*"))
