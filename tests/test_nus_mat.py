"""The NUS fixations.mat loader: real MIT1003 counts and conventions, generated edge cases."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from deepgaze_jax.data import mit1003
from deepgaze_jax.data.datasets import DatasetFormatError
from deepgaze_jax.data.fixations import FixationError
from deepgaze_jax.data.nus_mat import load_nus_mat, save_nus_mat


@pytest.fixture(scope="module")
def real_mit1003():
    try:
        root = mit1003.find_mit1003_root()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return root, mit1003.mit1003(root)


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (h, w) in sizes.items():
        Image.new("RGB", (w, h), (10, 20, 30)).save(folder / name)
    return folder


def test_real_mit1003_counts(real_mit1003):
    _, ds = real_mit1003
    fix = ds.fixations
    assert len(ds) == 1003 and len(set(ds.stimulus_names)) == 1003
    assert len(fix) == 104_171
    assert fix.num_subjects == 15 and fix.subject_names == mit1003.MIT1003_SUBJECTS
    assert set(np.unique(fix.subject)) == set(range(15))
    assert fix.duration is not None and fix.duration.min() > 0 and fix.duration.max() <= 3000  # ms, 3 s trials


def test_real_mit1003_coordinates_inside_with_half_pixel_convention(real_mit1003):
    root, ds = real_mit1003
    fix = ds.fixations
    heights, widths = fix.image_sizes[fix.n, 0], fix.image_sizes[fix.n, 1]
    assert np.all((fix.x >= 0) & (fix.x < widths) & (fix.y >= 0) & (fix.y < heights))
    # Raw fix_x lies in (0, W]: the NUS filter. The one raw fix_x below 0.5 (0.392) would be at
    # x = -0.108 after the shift; it is clamped onto the first column, nothing else moves.
    raw = scipy.io.loadmat(root / "fixations.mat", squeeze_me=True, struct_as_record=False)["fixations"]
    raw_x = np.concatenate([np.atleast_1d(s.fix_x).astype(float) for e in raw for s in e.subjects])
    assert raw_x.min() == pytest.approx(0.3924, abs=1e-4) and np.sum(raw_x < 0.5) == 1
    assert np.sum(fix.x == 0) == 1
    assert np.sum(fix.x != raw_x - 0.5) == 1
    assert (widths - fix.x).min() > 3 and (heights - fix.y).min() > 1  # nothing near W + 0.5


def test_fixture_layout_single_and_empty_subjects(tmp_path):
    stimuli = write_images(tmp_path / "stimuli", {"a.png": (6, 8), "b.jpg": (10, 4)})
    save_nus_mat(
        tmp_path / "fixations.mat",
        [
            ("a.png", [([1, 8.25], [1, 6], [100, 250]), ([3.25], [2.5], [120]), ([], [], [])]),
            ("b.jpg", [([2], [10], [90]), ([4], [1], [80]), ([1, 2, 3], [4, 5, 6], [1, 2, 3])]),
        ],
    )
    ds = load_nus_mat(stimuli, tmp_path / "fixations.mat", subject_names=["p", "q", "r"], name="fixture")
    fix = ds.fixations
    assert ds.name == "fixture" and ds.stimulus_names == ("a.png", "b.jpg")
    np.testing.assert_array_equal(ds.image_sizes, [[6, 8], [10, 4]])
    np.testing.assert_array_equal(fix.x, [0.5, 7.75, 2.75, 1.5, 3.5, 0.5, 1.5, 2.5])
    np.testing.assert_array_equal(fix.y, [0.5, 5.5, 2.0, 9.5, 0.5, 3.5, 4.5, 5.5])
    np.testing.assert_array_equal(fix.n, [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(fix.subject, [0, 0, 1, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(fix.duration, [100, 250, 120, 90, 80, 1, 2, 3])
    assert fix.subject_names == ("p", "q", "r")
    assert ds.load_image(1).shape == (10, 4, 3)


def test_fixture_one_image_one_subject_one_fixation(tmp_path):
    """squeeze_me unwraps every level to a bare struct / scalar here."""
    stimuli = write_images(tmp_path / "s", {"only.png": (5, 5)})
    save_nus_mat(tmp_path / "f.mat", [("only.png", [([2.0], [3.0], [150.0])])])
    fix = load_nus_mat(stimuli, tmp_path / "f.mat").fixations
    assert (len(fix), fix.x[0], fix.y[0], fix.duration[0], fix.num_subjects) == (1, 1.5, 2.5, 150.0, 1)


def test_half_pixel_margin_is_clamped_beyond_is_invalid(tmp_path):
    stimuli = write_images(tmp_path / "s", {"a.png": (4, 10)})
    save_nus_mat(tmp_path / "ok.mat", [("a.png", [([0.1, 10.5], [4.5, 0.0], [1, 1])])])
    fix = load_nus_mat(stimuli, tmp_path / "ok.mat").fixations
    np.testing.assert_array_equal(fix.x, [0.0, np.nextafter(10.0, 0)])
    np.testing.assert_array_equal(fix.y, [np.nextafter(4.0, 0), 0.0])
    save_nus_mat(tmp_path / "bad.mat", [("a.png", [([11.1, 5, np.nan], [1, -0.1, 2], [1, 1, 1])])])
    with pytest.raises(FixationError, match=r"bad\.mat.*3 invalid fixations \(1 NaN/inf, 2 out of bounds"):
        load_nus_mat(stimuli, tmp_path / "bad.mat")
    assert len(load_nus_mat(stimuli, tmp_path / "bad.mat", on_invalid="drop").fixations) == 0


def test_missing_image_names_file_and_mat(tmp_path):
    stimuli = write_images(tmp_path / "s", {"a.png": (4, 4)})
    save_nus_mat(tmp_path / "f.mat", [("a.png", [([1], [1], [1])]), ("gone.jpg", [([1], [1], [1])])])
    with pytest.raises(FileNotFoundError, match=r"listed in .*f\.mat are missing.*gone\.jpg"):
        load_nus_mat(stimuli, tmp_path / "f.mat")


def test_image_names_leaving_the_stimuli_folder_are_refused(tmp_path):
    stimuli = write_images(tmp_path / "s", {"a.png": (4, 4)})
    outside = write_images(tmp_path / "img", {"x.png": (4, 4)})  # exists, but not under the stimuli folder
    for name in ("../img/x.png", str(outside / "x.png"), "sub/../../img/x.png"):
        save_nus_mat(tmp_path / "f.mat", [("a.png", [([1], [1], [1])]), (name, [([1], [1], [1])])])
        with pytest.raises(DatasetFormatError, match=r"f\.mat names 1 image\(s\) outside the stimuli folder .*relative"):
            load_nus_mat(stimuli, tmp_path / "f.mat")
    (stimuli / "sub").mkdir()
    save_nus_mat(tmp_path / "f.mat", [("sub/../a.png", [([1], [1], [1])])])  # stays inside: fine
    assert len(load_nus_mat(stimuli, tmp_path / "f.mat")) == 1


def test_malformed_files(tmp_path):
    stimuli = write_images(tmp_path / "s", {"a.png": (4, 4)})
    scipy.io.savemat(tmp_path / "other.mat", {"data": np.zeros(3)})
    with pytest.raises(DatasetFormatError, match=r"other\.mat has no variable 'fixations' \(found data\)"):
        load_nus_mat(stimuli, tmp_path / "other.mat")
    scipy.io.savemat(tmp_path / "nofield.mat", {"fixations": np.array([[{"img": "a.png"}]], dtype=object)})
    with pytest.raises(DatasetFormatError, match=r"fixations\{1\} has no field 'subjects'"):
        load_nus_mat(stimuli, tmp_path / "nofield.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetFormatError, match=r"junk\.mat is not a readable MATLAB"):
        load_nus_mat(stimuli, tmp_path / "junk.mat")
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        load_nus_mat(stimuli, tmp_path / "absent.mat")
    save_nus_mat(tmp_path / "f.mat", [("a.png", [([1, 2], [1], [1])])])
    with pytest.raises(DatasetFormatError, match=r"subjects\{1\}: fix_x, fix_y, fix_duration have 2, 1, 1"):
        load_nus_mat(stimuli, tmp_path / "f.mat")
    save_nus_mat(tmp_path / "g.mat", [("a.png", [([1], [1], [1])])])
    with pytest.raises(ValueError, match="2 subject names given but .* has 1 subjects"):
        load_nus_mat(stimuli, tmp_path / "g.mat", subject_names=["a", "b"])
