"""MIT1003 (Judd et al. 2009): 1003 images, 15 observers, in the NUS ``fixations.mat`` layout.

`find_mit1003_root` locates the folder (holding ``stimuli/`` and ``fixations.mat``);
`mit1003` reads it as a `Dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from deepgaze_jax import settings
from deepgaze_jax.data.datasets import Dataset
from deepgaze_jax.data.nus_mat import load_nus_mat

MIT1003_ENV = settings.MIT1003
MIT1003_SUBJECTS = ("CNG", "ajs", "emb", "ems", "ff", "hp", "jcw", "jw", "kae", "krl", "po", "tmj", "tu", "ya", "zb")
_MIT1003_SHARED = Path("shared", "datasets", "mit1003")


def find_mit1003_root(root: str | os.PathLike | None = None) -> Path:
    """The MIT1003 folder (holding ``stimuli/`` and ``fixations.mat``).

    ``root`` if given, else ``$DEEPGAZE_JAX_MIT1003``, else the first ``shared/datasets/mit1003``
    found in the current directory, the package's directory, or any of their parents.
    """
    if root is None and settings.get(MIT1003_ENV):
        root, source = settings.get(MIT1003_ENV), f"${MIT1003_ENV}"
    else:
        source = "root"
    if root is not None:
        path = Path(root).expanduser()
        missing = [name for name in ("stimuli", "fixations.mat") if not (path / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"MIT1003 folder {path} (from {source}) lacks {' and '.join(missing)}; it must hold "
                "stimuli/*.jpg and fixations.mat"
            )
        return path
    searched = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / _MIT1003_SHARED
            if (candidate / "fixations.mat").is_file() and (candidate / "stimuli").is_dir():
                return candidate
        searched.append(str(start))
    raise FileNotFoundError(
        f"MIT1003 not found: no {_MIT1003_SHARED} in {' or '.join(searched)} or their parents. "
        f"Set {MIT1003_ENV}=/path/to/mit1003 (the folder with stimuli/ and fixations.mat) or pass root=."
    )


def mit1003(root: str | os.PathLike | None = None, on_invalid: Literal["raise", "drop"] = "raise") -> Dataset:
    """MIT1003 (1003 images, 15 observers) from its NUS-layout ``fixations.mat``; see `find_mit1003_root`."""
    path = find_mit1003_root(root)
    return load_nus_mat(
        path / "stimuli", path / "fixations.mat", on_invalid=on_invalid, subject_names=MIT1003_SUBJECTS, name="MIT1003"
    )
