"""Fixations in a plain table: CSV (``.csv``) or tab-separated (``.tsv``, ``.tab``).

One fixation per row, a header row naming the columns (any order, case-insensitive,
extra columns ignored)::

    image,x,y,subject,duration
    street.jpg,512.5,300,anna,240
    street.jpg,100,80.25,anna,180

* ``image``: the image file, relative to the stimuli folder (subfolders allowed, no
  absolute paths or ``..``);
* ``x``, ``y``: 0-based continuous pixel coordinates in that image (pixel (row i,
  column j) covers [j, j+1) x [i, i+1), so ``0 <= x < width``, ``0 <= y < height``);
* ``subject`` (optional): any label of the observer; empty means unknown;
* ``duration`` (optional): the fixation's duration in milliseconds.

Images are numbered in the order they first appear. Bad rows (wrong number of fields,
no image name, a number that does not parse, a point outside its image, ...) raise a
`FixationError` naming the file, line and reason, or are dropped and counted with
``drop_invalid=True`` (`records.keep_mask`). Blank lines are skipped.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePath

import numpy as np

from deepgaze_jax.data.datasets import Dataset, DatasetFormatError, read_image_size, stimulus_paths
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.data.records import BadRecord, DropReport, bounds_problems, keep_mask

DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
REQUIRED_COLUMNS = ("image", "x", "y")
OPTIONAL_COLUMNS = ("subject", "duration")


def _header(row: list[str], path: Path) -> dict[str, int]:
    """Column name -> position, for the columns this reader uses."""
    names = [name.strip().lower() for name in row]
    used = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    duplicates = sorted({name for name in names if names.count(name) > 1 and name in used})
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing or duplicates:
        problem = f"lacks the column(s) {', '.join(missing)}" if missing else f"repeats {', '.join(duplicates)}"
        raise DatasetFormatError(
            f"{path}: the header row {problem}; it must name the columns image, x, y "
            f"and optionally subject, duration (found: {', '.join(names) or 'an empty row'})"
        )
    return {name: names.index(name) for name in used if name in names}


def _number(text: str, column: str, where: str, problems: list[BadRecord], index: int) -> float | None:
    """``float(text)``, or None after recording why it is not a number."""
    try:
        return float(text)
    except ValueError:
        problems.append(BadRecord(index, where, f"{column} is not a number", repr(text)))
        return None


def _duration(text: str, where: str, problems: list[BadRecord], index: int) -> float:
    value = _number(text, "duration", where, problems, index)
    if value is not None and not (np.isfinite(value) and value >= 0):
        problems.append(BadRecord(index, where, "duration not a finite number >= 0", repr(text)))
    return np.nan if value is None else value


def _image_problem(name: str) -> str | None:
    if not name:
        return "no image name"
    if PurePath(name).is_absolute() or ".." in PurePath(name).parts:
        return "image path leaves the stimuli folder"
    return None


def _rows(path: Path, delimiter: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The header and the non-blank rows, each with where it is (``"line 7"``)."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file, delimiter=delimiter)
        rows = [(f"line {reader.line_num}", row) for row in reader if any(field.strip() for field in row)]
    if not rows:
        raise DatasetFormatError(f"{path} is empty; it needs a header row image,x,y[,subject][,duration]")
    return rows[0][1], rows[1:]


def _parse_row(
    row: list[str], positions: dict[str, int], width: int, index: int, where: str
) -> tuple[list[BadRecord], tuple]:
    """Row ``index`` -> its problems and (image or None, x, y, subject, duration), NaN where unparsable."""
    problems: list[BadRecord] = []
    if len(row) != width:
        problems.append(BadRecord(index, where, "wrong number of fields", f"{len(row)}, the header has {width}"))
        row = (row + [""] * width)[:width]
    fields = {name: row[position].strip() for name, position in positions.items()}
    image_problem = _image_problem(fields["image"])
    if image_problem:
        problems.append(BadRecord(index, where, image_problem, repr(fields["image"])))
    x, y = (_number(fields[axis], axis, where, problems, index) for axis in ("x", "y"))
    duration = _duration(fields["duration"], where, problems, index) if "duration" in fields else 0.0
    values = (
        None if image_problem else fields["image"],
        np.nan if x is None else x,
        np.nan if y is None else y,
        fields.get("subject", ""),
        duration,
    )
    return problems, values


def _parse_rows(path: Path, delimiter: str) -> tuple[dict[str, list], list[BadRecord], tuple[str, ...]]:
    """The table's columns as lists (one entry per non-blank row), the rows' problems and the columns present."""
    header, rows = _rows(path, delimiter)
    positions = _header(header, path)
    problems: list[BadRecord] = []
    parsed = []
    for index, (where, row) in enumerate(rows):
        row_problems, values = _parse_row(row, positions, len(header), index, where)
        problems += row_problems
        parsed.append(values)
    names = ("image", "x", "y", "subject", "duration")
    columns = {name: list(values) for name, values in zip(names, zip(*parsed))} if parsed else {n: [] for n in names}
    columns["where"] = [where for where, _ in rows]
    return columns, problems, tuple(positions)


def _subject_codes(labels: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Observer labels -> (N,) int32 codes numbered by first appearance (-1 for empty) and the names."""
    names = tuple(dict.fromkeys(label for label in labels if label))
    code = {name: i for i, name in enumerate(names)}
    return np.array([code.get(label, -1) for label in labels], np.int32), names


def read_table(
    path: str | os.PathLike, stimuli_dir: str | os.PathLike, drop_invalid: bool = False, delimiter: str | None = None
) -> tuple[Dataset, DropReport]:
    """Reads a fixation table (see the module docstring) and the sizes of the images it names.

    ``delimiter`` defaults to the one of the file's suffix (`DELIMITERS`). Returns the
    `Dataset` (named after the file) and what ``drop_invalid`` dropped.
    """
    path, stimuli_dir = Path(path), Path(stimuli_dir)
    if delimiter is None:
        if path.suffix.lower() not in DELIMITERS:
            raise ValueError(
                f"{path}: cannot tell the delimiter from the suffix; name it .csv or .tsv, or pass delimiter="
            )
        delimiter = DELIMITERS[path.suffix.lower()]
    columns, problems, present = _parse_rows(path, delimiter)
    names = list(dict.fromkeys(name for name in columns["image"] if name is not None))
    paths = stimulus_paths(stimuli_dir, names, path)
    sizes = np.array([read_image_size(p) for p in paths], np.int64).reshape(-1, 2)
    number = {name: i for i, name in enumerate(names)}
    n = np.array([number.get(name, 0) for name in columns["image"]], np.int64)
    x, y = np.array(columns["x"], np.float64), np.array(columns["y"], np.float64)
    already_bad = {p.index for p in problems}
    problems += [p for p in bounds_problems(x, y, n, sizes, columns["where"].__getitem__) if p.index not in already_bad]
    keep, report = keep_mask(sorted(problems, key=lambda p: p.index), len(x), path, drop_invalid)
    subject, subject_names = _subject_codes([s for s, k in zip(columns["subject"], keep) if k])
    fixations, _ = Fixations.create(
        x[keep], y[keep], n[keep], sizes,
        subject=subject,
        duration=np.array(columns["duration"])[keep] if "duration" in present else None,
        subject_names=subject_names if "subject" in present else None,
    )
    return Dataset(stimuli=paths, fixations=fixations, name=path.stem), report
