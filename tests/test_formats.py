"""`load_fixations`: the same fixations read back from a NUS .mat, a CSV, a TSV and pysaliency's HDF5."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepgaze_jax.data.fixations import FixationError
from deepgaze_jax.data.formats import load_fixations
from deepgaze_jax.data.nus_mat import save_nus_mat

FIXTURES = Path(__file__).parent / "data" / "pysaliency"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The fixtures' fixations written in every format, beside a copy of their images."""
    root = tmp_path_factory.mktemp("formats")
    shutil.copytree(FIXTURES / "stimuli", root / "stimuli")
    x, y, n, subject = (np.array(EXPECTED[k]) for k in ("x", "y", "n", "subject"))
    duration_ms = np.array(EXPECTED["duration_s"]) * 1000
    names = [Path(s).name for s in EXPECTED["stimuli"]]
    records = zip(x, y, n, subject, duration_ms)
    rows = [f"{names[i]},{float(a)!r},{float(b)!r},{s},{float(d)!r}" for a, b, i, s, d in records]
    (root / "fix.csv").write_text("image,x,y,subject,duration\n" + "\n".join(rows) + "\n")
    (root / "fix.tsv").write_text("image\tx\ty\tsubject\tduration\n" + "\n".join(r.replace(",", "\t") for r in rows))
    per_image = []
    for i, name in enumerate(names):
        on_image = [(x[(n == i) & (subject == s)] + 0.5, y[(n == i) & (subject == s)] + 0.5,
                     duration_ms[(n == i) & (subject == s)]) for s in range(subject.max() + 1)]
        per_image.append((name, on_image))
    save_nus_mat(root / "fixations.mat", per_image)
    return {
        "mat": root / "fixations.mat", "csv": root / "fix.csv", "tsv": root / "fix.tsv", "stimuli": root / "stimuli"
    }


@pytest.mark.parametrize("kind", ["mat", "csv", "tsv", "hdf5"])
def test_every_format_gives_the_same_fixations(files, kind):
    if kind == "hdf5":
        dataset = load_fixations(FIXTURES / "fixation_trains.hdf5", FIXTURES / "stimuli.hdf5")
    else:
        dataset = load_fixations(files[kind], files["stimuli"])
    assert [p.name for p in dataset.stimuli] == [Path(s).name for s in EXPECTED["stimuli"]]
    assert dataset.image_sizes.tolist() == EXPECTED["sizes"]
    fix = dataset.fixations
    np.testing.assert_allclose(fix.x, EXPECTED["x"], atol=1e-12)
    np.testing.assert_allclose(fix.y, EXPECTED["y"], atol=1e-12)
    np.testing.assert_array_equal(fix.n, EXPECTED["n"])
    np.testing.assert_array_equal(fix.subject, EXPECTED["subject"])
    np.testing.assert_allclose(fix.duration, np.array(EXPECTED["duration_s"]) * 1000, rtol=1e-6)


def test_drop_invalid_reaches_every_reader(files, tmp_path, caplog):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(files["csv"].read_text() + "street.png,1000,1,0,100\n")
    with pytest.raises(FixationError, match="line 20: outside the image"):
        load_fixations(bad_csv, files["stimuli"])
    with caplog.at_level(logging.WARNING):
        assert len(load_fixations(bad_csv, files["stimuli"], drop_invalid=True).fixations) == len(EXPECTED["x"])
    assert "dropped 1 of 19" in caplog.text
    bad_mat = tmp_path / "bad.mat"
    save_nus_mat(bad_mat, [("street.png", [([1000.0, 2.0], [1.0, 2.0], [100.0, 100.0])])])
    with pytest.raises(FixationError, match="bad.mat"):
        load_fixations(bad_mat, files["stimuli"])
    assert len(load_fixations(bad_mat, files["stimuli"], drop_invalid=True).fixations) == 1


def test_unknown_suffix_and_missing_stimuli(files):
    with pytest.raises(ValueError, match=r"unknown fixation file suffix '.json'; use one of .mat, .csv"):
        load_fixations("fix.json", files["stimuli"])
    with pytest.raises(ValueError, match="give the folder of the images"):
        load_fixations(files["csv"])
