"""Baseline fits kept on disk, so that the same fit is never run twice.

The centre bias (`centerbias.fit_center_bias`) and the gold standard
(`goldstandard.fit_gold_standard`) are fitted by a bounded search whose every step is a
leave-one-out KDE over all fixations: seconds per fit. A crossvalidation fits one centre
bias per fold, one for its mixture and both baselines for its report, and the next run on
the same data (another backbone, another seed, an ensemble) fits exactly the same ones
again. `cached_fit` stores each fit's few hyperparameters as one JSON file, keyed by a
SHA-256 of what decides them: the fixations (coordinates, images, observers, image
sizes), any other input array, the fit's settings and the source of the fitting code
(`centerbias`, `goldstandard`, `kde`), so an edit there refits. A file that cannot be read
or does not match its key is logged and fitted again; files are written atomically.

>>> import tempfile
>>> calls = []
>>> def fit():
...     calls.append(1)
...     return {"bandwidth": 0.05}
>>> with tempfile.TemporaryDirectory() as directory:
...     first = cached_fit(directory, "example", fit, arrays=(np.arange(3),), settings={"bounds": [0.0, 1.0]})
...     again = cached_fit(directory, "example", fit, arrays=(np.arange(3),), settings={"bounds": [0.0, 1.0]})
>>> first == again == {"bandwidth": 0.05}, len(calls)
(True, 1)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.data.fixations import Fixations

logger = logging.getLogger(__name__)

FORMAT = "deepgaze-jax-fit-v1"
SUBDIR = "fits"
"""The folder of a feature cache directory that the experiments keep their fits in."""
CODE_MODULES = ("deepgaze_jax.centerbias", "deepgaze_jax.goldstandard", "deepgaze_jax.kde")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (hex) of the source of the fitting modules (`CODE_MODULES`)."""
    h = hashlib.sha256()
    for name in CODE_MODULES:
        h.update(inspect.getsource(importlib.import_module(name)).encode())
    return h.hexdigest()


def fixation_arrays(fixations: Fixations) -> tuple[np.ndarray, ...]:
    """The arrays of ``fixations`` that a baseline fit depends on."""
    return fixations.x, fixations.y, fixations.n, fixations.subject, fixations.image_sizes


def fit_key(kind: str, arrays: Sequence[np.ndarray], settings: dict) -> str:
    """SHA-256 (hex) of the fit's kind, settings, input arrays (dtype, shape, bytes) and the fitting code."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "kind": kind, "settings": settings,
                                   "code_sha256": code_fingerprint()}, sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype}{array.shape};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def _read(path: Path, key: str) -> dict | None:
    """The stored fit of ``key`` at ``path``, or None when there is none or it cannot be used."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["fit"]
        problem = "it was written for another key"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"it cannot be read ({exc})"
    logger.warning(f"fitting again: the stored fit {path} is unusable, {problem}")
    return None


def cached_fit(
    directory: str | os.PathLike | None, kind: str, fit: Callable[[], dict], arrays: Sequence[np.ndarray],
    settings: dict,
) -> dict:
    """``fit()`` (a dict of JSON numbers), read from ``directory`` if stored there under the same key, else
    computed and stored. ``arrays`` and ``settings`` (JSON) are everything besides the code that decides it.
    ``directory`` None: no cache, ``fit()`` every time."""
    if directory is None:
        return fit()
    key = fit_key(kind, arrays, settings)
    path = Path(directory) / f"{kind}-{key[:40]}.json"
    stored = _read(path, key)
    if stored is not None:
        return stored
    result = fit()
    write_atomic(path, json.dumps({"format": FORMAT, "kind": kind, "key": key, "settings": settings, "fit": result}))
    return result
