"""pysaliency's HDF5 export: `FileStimuli` plus `Fixations` or `FixationTrains`, read with h5py.

pysaliency (Kümmerer's saliency toolbox) writes its objects with ``obj.to_hdf5(target)``,
``target`` a file or a group. This reader takes what pysaliency 0.2.22 writes
(checked against files it wrote: ``tests/data/make_pysaliency_fixtures.py``):

* ``FileStimuli`` (versions 1.0, 2.0, 2.1): ``filenames`` (relative to the HDF5 file's
  folder from version 2.0 on) and ``shapes`` ((height, width[, channels]) per image);
* ``Fixations`` (1.0): flat arrays ``x``, ``y``, ``n`` (image index), ``subjects`` and
  optionally ``duration`` (seconds);
* ``FixationTrains`` (1.0 to 1.2): scanpaths ``train_xs``, ``train_ys`` ((T, L), padded
  with trailing NaNs), ``train_ns``, ``train_subjects`` and optionally per-fixation
  ``durations`` (seconds) in ``scanpath_fixation_attributes``.

pysaliency's coordinates are 0-based pixels with pixel j covering [j, j+1) (it indexes
with ``int(x)``), the convention of `Fixations`; durations are converted to ms. The
stimuli and the fixations may be two files (``stimuli.to_hdf5("stimuli.hdf5")``,
``fixations.to_hdf5("fixations.hdf5")``) or two groups of one file. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from deepgaze_jax.data.datasets import Dataset, DatasetFormatError, read_image_size
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.records import BadRecord, DropReport, bounds_problems, keep_mask

VERSIONS = {"FileStimuli": ("1.0", "2.0", "2.1"), "Fixations": ("1.0",), "FixationTrains": ("1.0", "1.1", "1.2")}
FIXATION_TYPES = ("Fixations", "FixationTrains")
MS_PER_S = 1000.0


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _kind(group: h5py.Group) -> str | None:
    """The pysaliency type of a group (``attrs["type"]``), or None."""
    return _text(group.attrs["type"]) if "type" in group.attrs else None


def _find(file: h5py.File, kinds: tuple[str, ...]) -> h5py.Group | None:
    """The root if it is of one of ``kinds``, else its only child group of those kinds (None if there is none)."""
    if _kind(file) in kinds:
        return file
    found = [group for group in file.values() if isinstance(group, h5py.Group) and _kind(group) in kinds]
    if len(found) > 1:
        names = ", ".join(group.name for group in found)
        raise DatasetFormatError(f"{file.filename} holds several pysaliency {'/'.join(kinds)} groups ({names})")
    return found[0] if found else None


def _checked_version(group: h5py.Group) -> str:
    kind, version = _kind(group), _text(group.attrs.get("version", b"?"))
    if version not in VERSIONS[kind]:
        raise DatasetFormatError(
            f"{group.file.filename}:{group.name}: pysaliency {kind} version {version} is not supported "
            f"(known: {', '.join(VERSIONS[kind])}, as pysaliency 0.2.22 writes)"
        )
    return version


def _dataset(group: h5py.Group, name: str) -> np.ndarray:
    if name not in group or not isinstance(group[name], h5py.Dataset):
        where = f"{group.file.filename}:{group.name}"
        raise DatasetFormatError(f"{where} lacks the dataset {name!r} of pysaliency's layout")
    return group[name][()]


def _stimuli(group: h5py.Group) -> tuple[tuple[Path, ...], np.ndarray]:
    """Image paths and (I, 2) (height, width) of a FileStimuli group, checked against the image files."""
    version = _checked_version(group)
    base = Path(group.file.filename).parent
    names = [_text(name) for name in np.ravel(_dataset(group, "filenames"))]
    paths = tuple(base / name if version >= "2.0" else Path(name) for name in names)
    shapes = [tuple(int(s) for s in shape[:2]) for shape in _dataset(group, "shapes")]
    if len(shapes) != len(paths):
        raise DatasetFormatError(f"{group.file.filename}:{group.name}: {len(paths)} filenames but {len(shapes)} shapes")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        examples = ", ".join(missing[:3])
        raise FileNotFoundError(f"{len(missing)} image(s) of {group.file.filename} are missing, e.g. {examples}")
    for path, shape in zip(paths, shapes):
        if read_image_size(path) != shape:
            size = read_image_size(path)
            raise DatasetFormatError(f"{path} is {size} (height, width) but {group.file.filename} says {shape}")
    return paths, np.array(shapes, np.int64).reshape(-1, 2)


def _flat(group: h5py.Group) -> dict[str, np.ndarray]:
    """x, y, n, subject, duration_ms (or None) and ``where`` labels of a Fixations group."""
    names = {"x": "x", "y": "y", "n": "n", "subject": "subjects"}
    columns = {key: np.ravel(_dataset(group, name)) for key, name in names.items()}
    attributes = json.loads(_text(group.attrs.get("__attributes__", b"[]")))
    duration = next((name for name in ("duration", "durations") if name in attributes), None)
    columns["duration_ms"] = None if duration is None else np.ravel(_dataset(group, duration)) * MS_PER_S
    columns["where"] = np.array([f"fixation {i}" for i in range(len(columns["x"]))], dtype=object)
    return columns


def _train_durations(group: h5py.Group, version: str) -> np.ndarray | None:
    """The (T, L) per-fixation durations of a FixationTrains group, if it has them."""
    if version < "1.2" or "scanpath_fixation_attributes" not in group:
        return None
    mapping = json.loads(_text(group.attrs.get("scanpath_attribute_mapping", b"{}")))
    stored = group["scanpath_fixation_attributes"]
    name = next((key for key in stored if mapping.get(key, key) in ("duration", "durations")), None)
    return None if name is None else stored[name][()]


def _trains(group: h5py.Group, version: str) -> dict[str, np.ndarray]:
    """A FixationTrains group flattened as pysaliency does: each scanpath up to its trailing NaNs."""
    xs, ys = (np.atleast_2d(_dataset(group, name)).astype(np.float64) for name in ("train_xs", "train_ys"))
    ns, subjects = (np.ravel(_dataset(group, name)) for name in ("train_ns", "train_subjects"))
    if not xs.shape == ys.shape or not len(ns) == len(subjects) == len(xs):
        raise DatasetFormatError(f"{group.file.filename}:{group.name}: scanpath arrays of different shapes")
    present = ~np.isnan(xs)
    lengths = np.where(present.any(axis=1), xs.shape[1] - np.argmax(present[:, ::-1], axis=1), 0)
    taken = np.arange(xs.shape[1])[None, :] < lengths[:, None]
    train, step = np.nonzero(taken)
    durations = _train_durations(group, version)
    if durations is not None and durations.shape != xs.shape:
        where = f"{group.file.filename}:{group.name}"
        raise DatasetFormatError(f"{where}: durations of shape {durations.shape}, not that of train_xs {xs.shape}")
    return {
        "x": xs[taken], "y": ys[taken], "n": ns[train], "subject": subjects[train],
        "duration_ms": None if durations is None else durations[taken] * MS_PER_S,
        "where": np.array([f"scanpath {t}, fixation {k}" for t, k in zip(train, step)], dtype=object),
    }


def _records(group: h5py.Group) -> dict[str, np.ndarray]:
    """The fixation records of a Fixations or FixationTrains group, with consistent lengths and integer indices."""
    version = _checked_version(group)
    columns = _flat(group) if _kind(group) == "Fixations" else _trains(group, version)
    where = f"{group.file.filename}:{group.name}"
    lengths = {len(columns[key]) for key in ("x", "y", "n", "subject")}
    if columns["duration_ms"] is not None:
        lengths.add(len(columns["duration_ms"]))
    if len(lengths) > 1:
        raise DatasetFormatError(f"{where}: x, y, n, subjects and durations differ in length")
    for key in ("n", "subject"):
        if not np.issubdtype(columns[key].dtype, np.integer):
            raise DatasetFormatError(f"{where}: {key} should hold integers, got {columns[key].dtype}")
    return columns


def _problems(columns: dict[str, np.ndarray], sizes: np.ndarray) -> list[BadRecord]:
    where = columns["where"]
    n = columns["n"]
    bad_index = (n < 0) | (n >= len(sizes))
    problems = [
        BadRecord(int(i), where[i], "image index not in the stimuli", f"n={n[i]}") for i in np.flatnonzero(bad_index)
    ]
    x, y = (np.where(bad_index, 0.0, columns[axis]) for axis in ("x", "y"))
    problems += bounds_problems(x, y, np.where(bad_index, 0, n), sizes, where.__getitem__)
    if columns["duration_ms"] is not None:
        d = columns["duration_ms"]
        problems += [BadRecord(int(i), where[i], "duration not a finite number >= 0", f"{d[i]:g} ms")
                     for i in np.flatnonzero(~(np.isfinite(d) & (d >= 0)))]
    return sorted(problems, key=lambda p: p.index)


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"HDF5 file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFormatError(f"{path} is not a readable HDF5 file: {exc}") from exc


def _file_stimuli(file: h5py.File, hint: str) -> tuple[tuple[Path, ...], np.ndarray]:
    group = _find(file, ("FileStimuli",))
    if group is None:
        raise DatasetFormatError(f"{file.filename} holds no pysaliency FileStimuli (attrs['type']); {hint}")
    return _stimuli(group)


def read_pysaliency_hdf5(
    path: str | os.PathLike, stimuli: str | os.PathLike | None = None, drop_invalid: bool = False
) -> tuple[Dataset, DropReport]:
    """Reads pysaliency fixations from ``path`` and the `FileStimuli` they index.

    ``stimuli`` is the FileStimuli HDF5 file; leave it out when ``path`` holds both (as two
    groups). Returns the `Dataset` (named after the file) and what ``drop_invalid`` dropped.
    """
    path = Path(path)
    with _open(path) as file:
        fixation_group = _find(file, FIXATION_TYPES)
        if fixation_group is None:
            raise DatasetFormatError(f"{path} holds no pysaliency Fixations or FixationTrains (attrs['type'])")
        columns = _records(fixation_group)
        if stimuli is None:
            paths, sizes = _file_stimuli(file, "pass the file that stimuli.to_hdf5() wrote as stimuli")
    if stimuli is not None:
        with _open(Path(stimuli)) as file:
            paths, sizes = _file_stimuli(file, "it must be the file that stimuli.to_hdf5() wrote")
    keep, report = keep_mask(_problems(columns, sizes), len(columns["x"]), path, drop_invalid)
    duration = columns["duration_ms"]
    fixations, _ = Fixations.create(
        columns["x"][keep], columns["y"][keep], columns["n"][keep].astype(np.int64), sizes,
        subject=columns["subject"][keep].astype(np.int32),
        duration=None if duration is None else duration[keep],
    )
    return Dataset(stimuli=paths, fixations=fixations, name=path.stem), report
