"""The CSV/TSV fixation table reader: layout, conventions, and an error per kind of bad row."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax.data.csv import read_table
from deepgaze_jax.data.datasets import DatasetFormatError
from deepgaze_jax.data.fixations import FixationError

SIZES = {"street.png": (40, 60), "sub/portrait.png": (64, 32)}  # (height, width)


@pytest.fixture
def stimuli(tmp_path) -> Path:
    folder = tmp_path / "stimuli"
    for name, (h, w) in SIZES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (10, 20, 30)).save(folder / name)
    return folder


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_reads_table_with_all_columns(tmp_path, stimuli):
    table = write(tmp_path / "fix.csv", (
        "image,x,y,subject,duration\n"
        "sub/portrait.png,0,63.5,bob,100\n"
        "street.png,59.99,0,anna,250.5\n"
        "\n"
        "street.png,10.25,20,bob,80\n"
    ))
    dataset, report = read_table(table, stimuli)
    assert dataset.stimulus_names == ("portrait.png", "street.png")  # order of first appearance
    assert dataset.stimuli[0] == stimuli / "sub/portrait.png" and dataset.name == "fix"
    assert dataset.image_sizes.tolist() == [[64, 32], [40, 60]]
    fix = dataset.fixations
    np.testing.assert_array_equal(fix.x, [0, 59.99, 10.25])
    np.testing.assert_array_equal(fix.y, [63.5, 0, 20])
    np.testing.assert_array_equal(fix.n, [0, 1, 1])
    assert fix.subject_names == ("bob", "anna") and fix.subject.tolist() == [0, 1, 0]
    np.testing.assert_allclose(fix.duration, [100, 250.5, 80])
    assert report.dropped == 0 and report.total == 3


def test_tsv_with_other_column_order_bom_and_extra_columns(tmp_path, stimuli):
    table = write(tmp_path / "fix.tsv", "Y\ttrial\tX\tImage\n5\t1\t7\tstreet.png\n", encoding="utf-8-sig")
    fix = read_table(table, stimuli)[0].fixations
    assert (fix.x.tolist(), fix.y.tolist()) == ([7.0], [5.0])
    assert fix.duration is None and fix.subject.tolist() == [-1] and fix.subject_names is None


@pytest.mark.parametrize(
    "row, reason",
    [
        ("street.png,abc,3", "x is not a number"),
        ("street.png,60,3", "outside the image"),  # x must be < width 60
        ("street.png,-0.01,3", "outside the image"),
        ("street.png,nan,3", "coordinate not finite"),
        ("street.png,1,2,3", "wrong number of fields"),
        (",1,2", "no image name"),
        ("../street.png,1,2", "image path leaves the stimuli folder"),
        ("/etc/street.png,1,2", "image path leaves the stimuli folder"),
    ],
)
def test_bad_row_names_file_line_and_reason(tmp_path, stimuli, row, reason):
    table = write(tmp_path / "fix.csv", f"image,x,y\nstreet.png,1,1\n{row}\n")
    with pytest.raises(FixationError) as error:
        read_table(table, stimuli)
    message = str(error.value)
    assert str(table) in message and "line 3" in message and reason in message and "drop_invalid" in message


@pytest.mark.parametrize("value", ["-5", "inf", "nan", "long"])
def test_bad_duration(tmp_path, stimuli, value):
    table = write(tmp_path / "fix.csv", f"image,x,y,duration\nstreet.png,1,1,{value}\n")
    with pytest.raises(FixationError, match="line 2: duration"):
        read_table(table, stimuli)


def test_drop_invalid_drops_and_counts(tmp_path, stimuli, caplog):
    table = write(tmp_path / "fix.csv", (
        "image,x,y\n"
        "street.png,1,1\n"
        "street.png,99,1\n"
        "street.png,x,1\n"
        "sub/portrait.png,31.5,2\n"
        "street.png,1,1000\n"
    ))
    with caplog.at_level(logging.WARNING):
        dataset, report = read_table(table, stimuli, drop_invalid=True)
    assert report.total == 5 and report.dropped == 3
    assert report.dropped_by_reason == {"outside the image": 2, "x is not a number": 1}
    assert dataset.fixations.x.tolist() == [1.0, 31.5] and dataset.fixations.n.tolist() == [0, 1]
    assert "dropped 3 of 5" in caplog.text and str(table) in caplog.text


def test_error_lists_the_first_rows_and_counts_the_rest(tmp_path, stimuli):
    table = write(tmp_path / "fix.csv", "image,x,y\n" + "street.png,-1,1\n" * 8)
    with pytest.raises(FixationError, match=r"8 bad fixation record\(s\): line 2: .*line 6: .* and 3 more"):
        read_table(table, stimuli)


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("img,x,y\nstreet.png,1,1\n", DatasetFormatError, "lacks the column"),
        ("image,x,x,y\nstreet.png,1,1,1\n", DatasetFormatError, "repeats x"),
        ("", DatasetFormatError, "is empty"),
        ("image,x,y\n", FixationError, "holds no fixation records"),
        ("image,x,y\nmissing.png,1,1\n", FileNotFoundError, "missing.png"),
    ],
)
def test_file_level_errors(tmp_path, stimuli, text, error, match):
    with pytest.raises(error, match=match):
        read_table(write(tmp_path / "fix.csv", text), stimuli)


def test_all_rows_bad_is_an_error_even_when_dropping(tmp_path, stimuli):
    table = write(tmp_path / "fix.csv", "image,x,y\nstreet.png,-1,1\n")
    with pytest.raises(FixationError, match="all 1 fixation records are bad"):
        read_table(table, stimuli, drop_invalid=True)


def test_a_row_with_several_problems_counts_once(tmp_path, stimuli):
    table = write(tmp_path / "fix.csv", "image,x,y\nstreet.png,a,b\nstreet.png,1,1\n")
    dataset, report = read_table(table, stimuli, drop_invalid=True)
    assert report.dropped_by_reason == {"x is not a number": 1} and len(dataset.fixations) == 1
