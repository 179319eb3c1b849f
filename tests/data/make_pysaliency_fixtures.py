"""Writes the pysaliency HDF5 fixtures of tests/test_pysaliency_hdf5.py with pysaliency itself.

pysaliency is not a dependency of deepgaze-jax (it needs torch and an old NumPy), so this
runs in a separate environment, once, and its small outputs are committed:

    python3 -m venv /work/pysal-venv
    /work/pysal-venv/bin/pip install pysaliency==0.2.22 torch==2.13.0 'numpy<2' 'setuptools<81' h5py
    /work/pysal-venv/bin/python tests/data/make_pysaliency_fixtures.py tests/data/pysaliency

(pysaliency 0.2.22 writes its HDF5 attributes with ``np.string_``, gone in NumPy 2, and
imports ``pkg_resources``, gone in setuptools 81.) It writes, in OUT:

* ``stimuli/{street,portrait,wide}.png``: three small images of different sizes;
* ``stimuli.hdf5``: the `pysaliency.FileStimuli` of those images;
* ``fixations.hdf5``: a `pysaliency.Fixations` (with a ``duration`` attribute in seconds);
* ``fixation_trains.hdf5``: a `pysaliency.FixationTrains` (scanpaths of unequal length,
  ``durations`` as a per-fixation scanpath attribute, as pysaliency's own datasets have);
* ``combined.hdf5``: the stimuli and the trains as groups ``stimuli`` and ``fixations``
  of one file;
* ``expected.json``: the fixations each file holds, flattened as pysaliency flattens them
  (x, y, n, subject, duration in seconds), for the tests to compare against.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pysaliency
from PIL import Image

SIZES = {"street": (40, 60), "portrait": (64, 32), "wide": (24, 72)}  # (height, width)


def write_images(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name, (height, width) in SIZES.items():
        path = folder / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def scanpaths(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]]:
    """(xs, ys, durations in s, image index, subject) per scanpath, inside each image."""
    heights_widths = list(SIZES.values())
    trains = []
    for n, (height, width) in enumerate(heights_widths):
        for subject in range(2):
            length = 2 + (n + subject) % 3
            xs = rng.uniform(0, width, length)
            ys = rng.uniform(0, height, length)
            trains.append((xs, ys, rng.uniform(0.1, 0.5, length), n, subject))
    return trains


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stimuli = pysaliency.FileStimuli(write_images(out / "stimuli"))
    stimuli.to_hdf5(str(out / "stimuli.hdf5"))
    trains = scanpaths(np.random.default_rng(1))
    xs, ys, durations, ns, subjects = zip(*trains)
    fixation_trains = pysaliency.FixationTrains.from_fixation_trains(
        list(xs), list(ys), [np.cumsum(d) for d in durations], list(ns), list(subjects),
        scanpath_fixation_attributes={"durations": list(durations)},
        scanpath_attribute_mapping={"durations": "duration"},
    )
    fixation_trains.to_hdf5(str(out / "fixation_trains.hdf5"))
    flat = {
        "x": np.concatenate(xs), "y": np.concatenate(ys), "duration_s": np.concatenate(durations),
        "n": np.concatenate([np.full(len(x), n) for x, n in zip(xs, ns)]),
        "subject": np.concatenate([np.full(len(x), s) for x, s in zip(xs, subjects)]),
    }
    fixations = pysaliency.Fixations.FixationsWithoutHistory(
        flat["x"], flat["y"], np.zeros(len(flat["x"])), flat["n"], flat["subject"]
    )
    fixations.duration = flat["duration_s"]
    fixations.__attributes__.append("duration")
    fixations.to_hdf5(str(out / "fixations.hdf5"))
    with h5py.File(out / "combined.hdf5", "w") as combined:
        stimuli.to_hdf5(combined.create_group("stimuli"))
        fixation_trains.to_hdf5(combined.create_group("fixations"))
    expected = {key: value.tolist() for key, value in flat.items()}
    expected["stimuli"] = [f"stimuli/{name}.png" for name in SIZES]
    expected["sizes"] = list(SIZES.values())
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    check_round_trip(out, fixation_trains, fixations)


def check_round_trip(out: Path, fixation_trains, fixations) -> None:
    """pysaliency reads back what it wrote (so the fixtures are files it accepts)."""
    trains_back = pysaliency.read_hdf5(str(out / "fixation_trains.hdf5"))
    np.testing.assert_allclose(trains_back.x, fixation_trains.x)
    np.testing.assert_allclose(trains_back.duration, fixation_trains.duration)
    fixations_back = pysaliency.read_hdf5(str(out / "fixations.hdf5"))
    np.testing.assert_allclose(fixations_back.y, fixations.y)
    stimuli_back = pysaliency.read_hdf5(str(out / "stimuli.hdf5"))
    assert [list(s[:2]) for s in stimuli_back.shapes] == [list(s) for s in SIZES.values()]


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "pysaliency"))
