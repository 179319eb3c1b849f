"""MATLAB files and coordinate conventions shared by the dataset readers (`nus_mat`, `salicon`).

`read_mat` loads a MATLAB v5 file with errors naming it; `cells`, `field` and `vector`
unpack what scipy returns. MATLAB shows pixel k (1-based) centred on k, i.e. an image spans
[0.5, W + 0.5]; `from_matlab_pixels` converts to this package's 0-based continuous
convention and `fixations_from_matlab` builds `Fixations` from such coordinates.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from scipy.io.matlab import mat_struct

from deepgaze_jax.data.datasets import DatasetFormatError
from deepgaze_jax.data.fixations import FixationError, Fixations

log = logging.getLogger(__name__)

# MATLAB shows pixel k (1-based) centred on k, i.e. the image spans [0.5, W + 0.5]. Dataset
# tools filter "inside" loosely (NUS: 0 < fix_x <= W), so a few points lie up to half a pixel
# outside the image after the shift to 0-based coordinates; those are moved onto the border pixel.
MATLAB_BORDER_MARGIN = 0.5


def read_mat(path: str | os.PathLike) -> dict:
    """``scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)`` with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file {path} does not exist")
    try:
        return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError as exc:  # scipy cannot read v7.3 (HDF5) files
        raise DatasetFormatError(f"{path}: {exc}; re-save it in MATLAB with save(..., '-v7')") from exc
    except Exception as exc:  # scipy raises assorted errors (IndexError, MatReadError, ...) on corrupt files
        raise DatasetFormatError(f"{path} is not a readable MATLAB v5 file: {exc}") from exc


def cells(value) -> list:
    """The elements of a squeezed MATLAB cell/struct array (a lone element comes back unwrapped)."""
    return list(value.ravel()) if isinstance(value, np.ndarray) else [value]


def field(struct, name: str, where: str):
    """``struct.name``, or a `DatasetFormatError` saying ``where`` it is missing."""
    if not isinstance(struct, mat_struct):
        raise DatasetFormatError(f"{where} should be a struct, got {type(struct).__name__}")
    if name not in struct._fieldnames:
        raise DatasetFormatError(f"{where} has no field {name!r} (fields: {', '.join(struct._fieldnames)})")
    return getattr(struct, name)


def vector(value, where: str) -> np.ndarray:
    """A numeric MATLAB array (scalar, empty, row or column) as a float64 (n,) vector."""
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{where} should be numeric, got {value!r}") from exc


def from_matlab_pixels(fix_x, fix_y, n, image_sizes) -> tuple[np.ndarray, np.ndarray]:
    """1-based MATLAB pixel coordinates (pixel k centred on k) to the 0-based continuous convention.

    Returns ``(fix_x - 0.5, fix_y - 0.5)``, except that points at most `MATLAB_BORDER_MARGIN`
    pixels outside their image ``n`` (sizes (I, 2) height, width) are clamped into its
    border pixel. Farther points and NaNs are returned unchanged, for `Fixations.create`
    to reject. Inputs are (N,) arrays; outputs are (N,) float64.
    """
    x = np.asarray(fix_x, dtype=np.float64) - 0.5
    y = np.asarray(fix_y, dtype=np.float64) - 0.5
    sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)[np.asarray(n, dtype=np.int64)]
    return _clamp_margin(x, sizes[:, 1]), _clamp_margin(y, sizes[:, 0])


def fixations_from_matlab(
    fix_x, fix_y, n, image_sizes, source: Path, on_invalid: Literal["raise", "drop"], **kwargs
) -> Fixations:
    """`Fixations.create` on MATLAB pixel coordinates (see `from_matlab_pixels`).

    Errors name ``source``; dropped fixations are logged as a warning. ``kwargs`` go to
    `Fixations.create` (subject, duration, subject_names).
    """
    x, y = from_matlab_pixels(fix_x, fix_y, n, image_sizes)
    try:
        fixations, report = Fixations.create(x, y, n, image_sizes, on_invalid=on_invalid, **kwargs)
    except FixationError as exc:
        raise FixationError(f"{source}: {exc}") from exc
    if report.dropped:
        log.warning(
            "%s: dropped %d invalid fixations (%d NaN/inf, %d out of bounds)",
            source, report.dropped, report.non_finite, report.out_of_bounds,
        )
    return fixations


def _clamp_margin(v: np.ndarray, limit: np.ndarray) -> np.ndarray:
    near = (v >= -MATLAB_BORDER_MARGIN) & (v <= limit + MATLAB_BORDER_MARGIN)
    return np.where(near, np.clip(v, 0.0, np.nextafter(limit.astype(np.float64), 0)), v)
