"""MIT1003 (Judd et al. 2009): 1003 images, 15 observers, in the NUS ``fixations.mat`` layout.

`find_mit1003_root` locates the folder (holding ``stimuli/`` and ``fixations.mat``);
`mit1003` reads it as a `Dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from deepgaze_jax import settings
from deepgaze_jax.data.datasets import Dataset, find_dataset_root
from deepgaze_jax.data.nus_mat import load_nus_mat

MIT1003_ENV = settings.MIT1003
MIT1003_SUBJECTS = ("CNG", "ajs", "emb", "ems", "ff", "hp", "jcw", "jw", "kae", "krl", "po", "tmj", "tu", "ya", "zb")


def find_mit1003_root(root: str | os.PathLike | None = None) -> Path:
    """The MIT1003 folder (holding ``stimuli/`` and ``fixations.mat``).

    ``root`` if given, else ``$DEEPGAZE_JAX_MIT1003``, else the first ``shared/datasets/mit1003``
    found in the current directory, the package's directory, or any of their parents.
    """
    return find_dataset_root("MIT1003", root, MIT1003_ENV, ("stimuli", "fixations.mat"), "stimuli/*.jpg and fixations.mat")


def mit1003(root: str | os.PathLike | None = None, on_invalid: Literal["raise", "drop"] = "raise") -> Dataset:
    """MIT1003 (1003 images, 15 observers) from its NUS-layout ``fixations.mat``; see `find_mit1003_root`."""
    path = find_mit1003_root(root)
    return load_nus_mat(
        path / "stimuli", path / "fixations.mat", on_invalid=on_invalid, subject_names=MIT1003_SUBJECTS, name="MIT1003"
    )
