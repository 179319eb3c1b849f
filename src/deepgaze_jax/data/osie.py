"""OSIE (Xu, Jiang, Wang, Kankanhalli & Zhao, JoV 2014): eye fixations and mouse tracking as Datasets.

The release (NUS-VIP/predicting-human-gaze-beyond-pixels, ``data/``) holds

- ``stimuli/<id>.jpg``: 700 images of 800x600 (W x H);
- ``eye/fixations.mat``: 15 observers' eye fixations in the NUS layout (`nus_mat`);
- ``mouse_amt/<id>.mat`` (835 Mechanical Turk workers) and ``mouse_lab/<id>.mat``
  (16 lab participants): mouse tracking in SALICON's mouse-contingent paradigm, one
  struct ``fixations`` per image with ``subj`` (n,) worker id, ``coord`` (n, 2) **[y x]**
  1-based MATLAB pixel indices, and ``order`` (n,) the sample's position in its
  worker's trajectory. They are mouse samples, not fixations: `osie_mouse` turns them
  into pseudo-fixations (`mouse_fixations`).

Coordinates become 0-based continuous pixels with ``x = matlab_x - 0.5`` (the centre of
pixel ``matlab_x``; `matlab.from_matlab_pixels`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from tqdm import tqdm

from deepgaze_jax import settings
from deepgaze_jax.data.datasets import Dataset, DatasetFormatError, find_dataset_root, read_image_size
from deepgaze_jax.data.mouse_fixations import PseudoFixationConfig, pseudo_fixations, trajectory_starts
from deepgaze_jax.data.matlab import field, fixations_from_matlab, read_mat, vector
from deepgaze_jax.data.nus_mat import load_nus_mat

OSIE_ENV = settings.OSIE
MOUSE_SOURCES = {"amt": "mouse_amt", "lab": "mouse_lab"}  # source name -> release folder
_REQUIRED = ("stimuli", "eye/fixations.mat")


@dataclasses.dataclass(frozen=True, eq=False)
class MouseRecording:
    """The mouse samples of one image: (n,) worker id, x and y (1-based MATLAB pixels), order (1-based)."""

    subject: np.ndarray
    x: np.ndarray
    y: np.ndarray
    order: np.ndarray


def find_osie_root(root: str | os.PathLike | None = None) -> Path:
    """The OSIE folder (with ``stimuli/`` and ``eye/fixations.mat``).

    ``root`` if given, else ``$DEEPGAZE_JAX_OSIE``, else the first ``shared/datasets/osie``
    in the current directory, the package's directory, or any of their parents.
    """
    layout = "the release's data/ folder: stimuli/, eye/fixations.mat, mouse_amt/, mouse_lab/"
    return find_dataset_root("OSIE", root, OSIE_ENV, _REQUIRED, layout)


def osie_eye(root: str | os.PathLike | None = None, on_invalid: Literal["raise", "drop"] = "raise") -> Dataset:
    """OSIE's eye fixations (700 images, 15 observers, durations in ms) from ``eye/fixations.mat``."""
    path = find_osie_root(root)
    return load_nus_mat(path / "stimuli", path / "eye" / "fixations.mat", on_invalid=on_invalid, name="OSIE eye")


def read_mouse_mat(path: str | os.PathLike) -> MouseRecording:
    """One per-image mouse file: the struct ``fixations`` with ``subj``, ``coord`` ([y x]) and ``order``."""
    mat = read_mat(path)
    if "fixations" not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise DatasetFormatError(f"{path} has no variable 'fixations' (found {found}); expected subj, coord, order")
    record = mat["fixations"]
    subject, order, coord = (
        vector(field(record, name, f"{path}: fixations"), f"{path}: fixations.{name}") for name in ("subj", "order", "coord")
    )
    if coord.size != 2 * len(subject) or len(order) != len(subject):
        raise DatasetFormatError(
            f"{path}: fixations.coord should be (n, 2) [y x] for n = {len(subject)} samples, got {coord.size} "
            f"numbers, and order {len(order)} entries"
        )
    yx = coord.reshape(-1, 2)  # rows [y x]; squeeze_me leaves (n, 2), or (2,) for one sample
    return MouseRecording(subject=subject.astype(np.int64), x=yx[:, 1], y=yx[:, 0], order=order.astype(np.int64))


def _check_trajectories(recording: MouseRecording, starts: np.ndarray, path: Path) -> None:
    """Raises unless every trajectory begins at order 1 (samples stored trajectory by trajectory, in order)."""
    bad = np.flatnonzero(starts & (recording.order != 1))
    if len(bad):
        k = bad[0]
        raise DatasetFormatError(
            f"{path}: the samples of worker {recording.subject[k]} jump to order {recording.order[k]} at row {k + 1}; "
            "each worker's trajectory must be stored contiguously in recording order, starting at order 1"
        )


def mouse_stimuli(root: Path, source: str) -> tuple[list[Path], list[Path]]:
    """Sorted stimulus paths of ``root`` and the matching ``<source folder>/<stem>.mat`` files."""
    if source not in MOUSE_SOURCES:
        raise ValueError(f"OSIE mouse source must be one of {tuple(MOUSE_SOURCES)}, got {source!r}")
    stimuli = sorted((root / "stimuli").glob("*.jpg"))
    mats = [root / MOUSE_SOURCES[source] / f"{p.stem}.mat" for p in stimuli]
    missing = [str(m) for m in mats if not m.is_file()]
    if not stimuli or missing:
        what = f"{len(missing)} mouse files are missing, e.g. {', '.join(missing[:3])}" if stimuli else "no stimuli/*.jpg"
        raise FileNotFoundError(f"OSIE {source} in {root}: {what}")
    return stimuli, mats


def read_mouse_source(root: Path, source: str, progress: bool = False) -> tuple[list[Path], list[MouseRecording]]:
    """The sorted stimuli of ``root`` and their mouse recordings of ``source``, trajectories checked."""
    stimuli, mats = mouse_stimuli(root, source)
    recordings = [read_mouse_mat(m) for m in tqdm(mats, desc=f"OSIE mouse {source}", disable=not progress, unit="img")]
    for mat_path, recording in zip(mats, recordings):
        _check_trajectories(recording, trajectory_starts(recording.subject, recording.order), mat_path)
    return stimuli, recordings


def osie_mouse(
    root: str | os.PathLike | None = None,
    source: str = "amt",
    config: PseudoFixationConfig = PseudoFixationConfig(),
    on_invalid: Literal["raise", "drop"] = "raise",
    progress: bool = False,
) -> Dataset:
    """OSIE's mouse tracking (``source`` "amt" or "lab") as pseudo-fixations, images sorted by name.

    Each worker's trajectory on each image becomes pseudo-fixations (`mouse_fixations`,
    parameters ``config`` in original pixels). ``subject`` indexes the source's sorted
    worker ids, the same worker on every image; ``subject_names`` are ``"<source>_<id>"``.
    There are no durations (the release has no timestamps).
    """
    path = find_osie_root(root)
    stimuli, recordings = read_mouse_source(path, source, progress)
    subject, x, y = (np.concatenate([np.zeros(0), *(getattr(r, k) for r in recordings)]) for k in ("subject", "x", "y"))
    starts = np.concatenate([np.zeros(0, bool), *(trajectory_starts(r.subject, r.order) for r in recordings)])
    image = np.repeat(np.arange(len(recordings)), [len(r.x) for r in recordings])
    fixations = pseudo_fixations(x, y, starts, config)  # image boundaries are trajectory starts
    n, worker = image[starts][fixations.trajectory], subject[starts][fixations.trajectory].astype(np.int64)
    workers = np.unique(worker)
    sizes = np.array([read_image_size(p) for p in stimuli], dtype=np.int64).reshape(-1, 2)
    fixations = fixations_from_matlab(
        fixations.x, fixations.y, n, sizes, path / MOUSE_SOURCES[source], on_invalid,
        subject=np.searchsorted(workers, worker).astype(np.int32),
        subject_names=[f"{source}_{w}" for w in workers],
    )
    return Dataset(stimuli=tuple(stimuli), fixations=fixations, name=f"OSIE mouse {source}")


def save_mouse_mat(path: str | os.PathLike, subject, yx, order) -> None:
    """Writes one per-image mouse file in the release layout (struct ``fixations``; subj, order (n, 1); coord (n, 2))."""
    record = {
        "subj": np.asarray(subject, dtype=np.uint16).reshape(-1, 1),
        "coord": np.asarray(yx, dtype=np.uint16).reshape(-1, 2),
        "order": np.asarray(order, dtype=np.uint16).reshape(-1, 1),
    }
    scipy.io.savemat(path, {"fixations": record}, format="5")
