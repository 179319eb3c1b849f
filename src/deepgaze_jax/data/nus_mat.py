"""The NUS VIP ``fixations.mat`` layout (MIT1003 as released by NUS, OSIE, EyeCrowd).

A MATLAB v5 file with one variable ``fixations``: an (I, 1) cell array whose cell ``i``
is a 1x1 struct with fields

- ``img``: the image file name, relative to the stimuli folder;
- ``subjects``: an (S, 1) cell array, one 1x1 struct per observer, with row vectors
  ``fix_x``, ``fix_y`` (1-based MATLAB pixel coordinates, pixel k centred on k) and
  ``fix_duration`` (ms). Observer ``j`` is the same person on every image.

Coordinates convert with `matlab.from_matlab_pixels` (``x = fix_x - 0.5``). The NUS
tools keep fixations with ``0 < fix_x <= W``, which reaches half a pixel past the left
and top edges after the shift; those few points (one in MIT1003) are clamped onto the
border pixel, as the NUS fixation-map code does with ``max(1, round(fix_x))``.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io

from deepgaze_jax.data.datasets import Dataset, DatasetFormatError, read_image_size, stimulus_paths
from deepgaze_jax.data.matlab import cells, field, fixations_from_matlab, read_mat, vector

_LAYOUT = "fixations{i}.img and fixations{i}.subjects{j}.fix_x / fix_y / fix_duration"

# One observer's data: fix_x, fix_y (MATLAB pixels) and fix_duration (ms), each (n,).
SubjectFixations = tuple[Sequence[float], Sequence[float], Sequence[float]]


def load_nus_mat(
    stimuli_dir: str | os.PathLike,
    fixations_mat: str | os.PathLike,
    on_invalid: Literal["raise", "drop"] = "raise",
    subject_names: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Reads a NUS-layout ``fixations.mat`` and the images it names from ``stimuli_dir``.

    Images keep the order of the file; observers are numbered by their index in
    ``subjects`` (named by ``subject_names`` if given). Image sizes come from the image
    headers. Invalid fixations (NaN, outside the image beyond the half-pixel margin) raise
    a `FixationError`, or are dropped with ``on_invalid="drop"``. ``name`` defaults to the
    name of the folder holding ``stimuli_dir``.
    """
    stimuli_dir, fixations_mat = Path(stimuli_dir), Path(fixations_mat)
    mat = read_mat(fixations_mat)
    if "fixations" not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise DatasetFormatError(f"{fixations_mat} has no variable 'fixations' (found {found}); expected {_LAYOUT}")
    entries = cells(mat["fixations"])
    names, columns = [], []  # columns: (fix_x, fix_y, duration, image index, subject index) per observer
    for i, entry in enumerate(entries):
        where = f"{fixations_mat}: fixations{{{i + 1}}}"
        img = field(entry, "img", where)
        if not isinstance(img, str):
            raise DatasetFormatError(f"{where}.img should be a file name, got {img!r}")
        names.append(img)
        for j, subject in enumerate(cells(field(entry, "subjects", where))):
            at = f"{where}.subjects{{{j + 1}}}"
            fx, fy, fd = (vector(field(subject, f, at), f"{at}.{f}") for f in ("fix_x", "fix_y", "fix_duration"))
            if not len(fx) == len(fy) == len(fd):
                lengths = f"{len(fx)}, {len(fy)}, {len(fd)}"
                raise DatasetFormatError(f"{at}: fix_x, fix_y, fix_duration have {lengths} entries")
            columns.append((fx, fy, fd, np.full(len(fx), i), np.full(len(fx), j)))
    duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        raise DatasetFormatError(f"{fixations_mat} lists images more than once: {', '.join(duplicates[:5])}")
    num_subjects = max((len(cells(e.subjects)) for e in entries), default=0)
    if subject_names is not None and len(subject_names) != num_subjects:
        raise ValueError(f"{len(subject_names)} subject names given but {fixations_mat} has {num_subjects} subjects")

    paths = stimulus_paths(stimuli_dir, names, fixations_mat)
    sizes = np.array([read_image_size(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    fix_x, fix_y, duration, n, subject = (
        np.concatenate([c[k] for c in columns]) if columns else np.zeros(0) for k in range(5)
    )
    fixations = fixations_from_matlab(
        fix_x, fix_y, n.astype(np.int64), sizes, fixations_mat, on_invalid,
        subject=subject.astype(np.int32), duration=duration, subject_names=subject_names,
    )
    return Dataset(stimuli=paths, fixations=fixations, name=name or stimuli_dir.parent.name)


def save_nus_mat(path: str | os.PathLike, images: Sequence[tuple[str, Sequence[SubjectFixations]]]) -> None:
    """Writes ``[(image name, [(fix_x, fix_y, fix_duration) per observer]) per image]`` in the NUS layout.

    Produces the same MATLAB types and shapes as the released files: ``fixations`` an (I, 1)
    cell of 1x1 structs, ``subjects`` (S, 1) cells, coordinates and durations (1, n) doubles.
    """
    entries = np.empty((len(images), 1), dtype=object)
    for i, (img, subjects) in enumerate(images):
        per_subject = np.empty((len(subjects), 1), dtype=object)
        for j, (fx, fy, fd) in enumerate(subjects):
            per_subject[j, 0] = {
                key: np.asarray(v, dtype=np.float64).reshape(1, -1)
                for key, v in (("fix_x", fx), ("fix_y", fy), ("fix_duration", fd))
            }
        entries[i, 0] = {"img": img, "subjects": per_subject}
    scipy.io.savemat(path, {"fixations": entries}, format="5")
