"""OSIE loaders: a generated release (eye + mouse), conventions, errors; real-data counts when present."""

import numpy as np
import pytest
import scipy.io

from deepgaze_jax.data import osie
from deepgaze_jax.data.datasets import DatasetFormatError
from deepgaze_jax.data.osie import find_osie_root, osie_eye, osie_mouse
from osie_fixture import MOUSE, SIZE, write_release

@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "osie", MOUSE)


def test_amt_pseudo_fixations_are_means_in_zero_based_pixels(release):
    ds = osie_mouse(release, "amt")
    fix = ds.fixations
    assert ds.stimulus_names == ("1001.jpg", "1002.jpg") and ds.name == "OSIE mouse amt"
    np.testing.assert_array_equal(fix.image_sizes, [SIZE, SIZE])
    # x = mean(MATLAB x) - 0.5; worker ids 3, 7 -> subjects 0, 1
    np.testing.assert_allclose(fix.x, [3 - 0.5, 30.5 - 0.5, 5.5 - 0.5, 40 - 0.5])
    np.testing.assert_allclose(fix.y, [10 - 0.5, 20.5 - 0.5, 5 - 0.5, 30 - 0.5])
    np.testing.assert_array_equal(fix.n, [0, 0, 0, 1])
    np.testing.assert_array_equal(fix.subject, [1, 1, 0, 0])
    assert fix.subject_names == ("amt_3", "amt_7") and fix.duration is None


def test_lab_source_and_a_config(release):
    fix = osie_mouse(release, "lab").fixations
    np.testing.assert_allclose(fix.x, [20.5 - 0.5, 1 - 0.5])  # the sample at y 300 is a fast jump away
    strict = osie_mouse(release, "lab", osie.PseudoFixationConfig(max_step_px=0.5)).fixations
    assert len(strict) == 0


def test_eye_fixations_use_the_nus_loader(release):
    ds = osie_eye(release)
    np.testing.assert_allclose(ds.fixations.x, [0.5, 39.5, 19.5])
    np.testing.assert_array_equal(ds.fixations.subject, [0, 0, 1])
    np.testing.assert_allclose(ds.fixations.duration, [100, 200, 300])


def test_root_from_the_environment(release, monkeypatch):
    monkeypatch.setenv(osie.OSIE_ENV, str(release))
    assert find_osie_root() == release
    monkeypatch.setenv(osie.OSIE_ENV, str(release / "missing"))
    with pytest.raises(FileNotFoundError, match=r"DEEPGAZE_JAX_OSIE.*lacks stimuli and eye/fixations\.mat"):
        find_osie_root()


def test_missing_mouse_files_and_unknown_source(release):
    (release / "mouse_lab" / "1002.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 mouse files are missing.*mouse_lab/1002\.mat"):
        osie_mouse(release, "lab")
    with pytest.raises(ValueError, match="'amt', 'lab'"):
        osie_mouse(release, "eye")


def test_out_of_order_samples_say_how_to_fix(tmp_path):
    root = write_release(tmp_path / "osie", {**MOUSE, ("amt", "1002"): ([3, 3], [[1, 1], [1, 2]], [2, 1])})
    with pytest.raises(DatasetFormatError, match=r"1002\.mat: the samples of worker 3 jump to order 2 at row 1"):
        osie_mouse(root, "amt")


def test_malformed_mouse_file(tmp_path):
    root = write_release(tmp_path / "osie", MOUSE)
    scipy.io.savemat(root / "mouse_amt" / "1002.mat", {"fixations": {"subj": [1, 2], "coord": [1, 2, 3], "order": [1, 2]}})
    with pytest.raises(DatasetFormatError, match=r"coord should be \(n, 2\) \[y x\] for n = 2"):
        osie_mouse(root, "amt")


@pytest.fixture(scope="module")
def real_root():
    try:
        return find_osie_root()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
def test_real_osie_counts(real_root):
    eye = osie_eye(real_root)
    assert len(eye) == 700 and len(eye.fixations) == 98_321 and eye.fixations.num_subjects == 15
    for source, workers in (("amt", 835), ("lab", 16)):
        mouse = osie_mouse(real_root, source)
        assert mouse.stimulus_names == eye.stimulus_names
        assert mouse.fixations.num_subjects == workers
        assert np.all(mouse.fixations.counts_per_image() > 0)
