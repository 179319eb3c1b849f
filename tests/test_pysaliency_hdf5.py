"""The pysaliency HDF5 reader, on files pysaliency 0.2.22 wrote (tests/data/make_pysaliency_fixtures.py)."""

import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from deepgaze_jax.data.datasets import DatasetFormatError
from deepgaze_jax.data.fixations import FixationError
from deepgaze_jax.data.pysaliency_hdf5 import read_pysaliency_hdf5

FIXTURES = Path(__file__).parent / "data" / "pysaliency"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def copied(tmp_path) -> Path:
    """A writable copy of the fixtures (FileStimuli names are relative to the HDF5 file, so the images come too)."""
    shutil.copytree(FIXTURES, tmp_path / "pysaliency")
    return tmp_path / "pysaliency"


@pytest.mark.parametrize(
    "name, stimuli",
    [("fixations.hdf5", "stimuli.hdf5"), ("fixation_trains.hdf5", "stimuli.hdf5"), ("combined.hdf5", None)],
)
def test_reads_what_pysaliency_wrote(name, stimuli):
    dataset, report = read_pysaliency_hdf5(FIXTURES / name, None if stimuli is None else FIXTURES / stimuli)
    assert dataset.stimuli == tuple(FIXTURES / s for s in EXPECTED["stimuli"])
    assert dataset.image_sizes.tolist() == EXPECTED["sizes"]
    fix = dataset.fixations
    np.testing.assert_array_equal(fix.x, EXPECTED["x"])
    np.testing.assert_array_equal(fix.y, EXPECTED["y"])
    np.testing.assert_array_equal(fix.n, EXPECTED["n"])
    np.testing.assert_array_equal(fix.subject, EXPECTED["subject"])
    np.testing.assert_allclose(fix.duration, np.array(EXPECTED["duration_s"]) * 1000, rtol=1e-6)  # seconds -> ms
    assert report.dropped == 0 and report.total == len(EXPECTED["x"])


def test_fixations_without_their_stimuli_say_what_to_pass():
    with pytest.raises(DatasetFormatError, match="holds no pysaliency FileStimuli.*as stimuli"):
        read_pysaliency_hdf5(FIXTURES / "fixations.hdf5")
    with pytest.raises(DatasetFormatError, match="holds no pysaliency FileStimuli"):
        read_pysaliency_hdf5(FIXTURES / "fixations.hdf5", FIXTURES / "fixation_trains.hdf5")


def test_bad_records_name_scanpath_and_fixation(copied):
    with h5py.File(copied / "fixation_trains.hdf5", "r+") as file:
        file["train_xs"][1, 0] = 1e6  # scanpath 1 is on image 0, 60 pixels wide
        file["train_ns"][2] = 7  # there are 3 images
    with pytest.raises(FixationError) as error:
        read_pysaliency_hdf5(copied / "fixation_trains.hdf5", copied / "stimuli.hdf5")
    message = str(error.value)
    assert "fixation_trains.hdf5" in message
    assert "scanpath 1, fixation 0: outside the image (x=1e+06" in message
    assert "scanpath 2, fixation 0: image index not in the stimuli (n=7)" in message


def test_drop_invalid_counts_by_reason(copied, caplog):
    with h5py.File(copied / "fixations.hdf5", "r+") as file:
        file["y"][0] = np.nan
        file["x"][3] = -2.0
        file["duration"][5] = -1.0
    with caplog.at_level(logging.WARNING):
        dataset, report = read_pysaliency_hdf5(copied / "fixations.hdf5", copied / "stimuli.hdf5", drop_invalid=True)
    assert report.dropped_by_reason == {
        "coordinate not finite": 1, "outside the image": 1, "duration not a finite number >= 0": 1
    }
    kept = np.delete(np.array(EXPECTED["x"]), [0, 3, 5])
    np.testing.assert_array_equal(dataset.fixations.x, kept)
    assert "dropped 3 of 18" in caplog.text


def test_interior_nan_is_a_bad_record_and_trailing_nans_are_padding(copied):
    with h5py.File(copied / "fixation_trains.hdf5", "r+") as file:
        xs = file["train_xs"][()]
        length = int((~np.isnan(xs[0])).sum())
        assert length >= 2 and np.isnan(xs[0, length:]).all()  # the fixture pads scanpath 0
        file["train_xs"][0, 0] = np.nan
    with pytest.raises(FixationError, match="scanpath 0, fixation 0: coordinate not finite"):
        read_pysaliency_hdf5(copied / "fixation_trains.hdf5", copied / "stimuli.hdf5")


def test_unknown_version_and_layout_errors(copied, tmp_path):
    with h5py.File(copied / "fixations.hdf5", "r+") as file:
        file.attrs["version"] = np.bytes_(b"9.0")
    with pytest.raises(DatasetFormatError, match="Fixations version 9.0 is not supported"):
        read_pysaliency_hdf5(copied / "fixations.hdf5", copied / "stimuli.hdf5")
    with h5py.File(copied / "fixation_trains.hdf5", "r+") as file:
        del file["train_ys"]
    with pytest.raises(DatasetFormatError, match="lacks the dataset 'train_ys'"):
        read_pysaliency_hdf5(copied / "fixation_trains.hdf5", copied / "stimuli.hdf5")
    (tmp_path / "not.hdf5").write_bytes(b"hello")
    with pytest.raises(DatasetFormatError, match="not a readable HDF5 file"):
        read_pysaliency_hdf5(tmp_path / "not.hdf5")


def test_missing_or_resized_images_are_errors(copied):
    (copied / "stimuli" / "wide.png").unlink()
    with pytest.raises(FileNotFoundError, match="wide.png"):
        read_pysaliency_hdf5(copied / "combined.hdf5")
    shutil.copy(copied / "stimuli" / "street.png", copied / "stimuli" / "wide.png")
    with pytest.raises(DatasetFormatError, match=r"wide.png is \(40, 60\).*says \(24, 72\)"):
        read_pysaliency_hdf5(copied / "combined.hdf5")


def test_inconsistent_arrays_are_format_errors(copied):
    with h5py.File(copied / "fixations.hdf5", "r+") as file:
        del file["duration"]
        file["duration"] = np.ones(3)
    with pytest.raises(DatasetFormatError, match="differ in length"):
        read_pysaliency_hdf5(copied / "fixations.hdf5", copied / "stimuli.hdf5")
    with h5py.File(copied / "fixation_trains.hdf5", "r+") as file:
        train_ns = file["train_ns"][()]
        del file["train_ns"]
        file["train_ns"] = train_ns.astype(np.float64)
    with pytest.raises(DatasetFormatError, match="n should hold integers"):
        read_pysaliency_hdf5(copied / "fixation_trains.hdf5", copied / "stimuli.hdf5")
