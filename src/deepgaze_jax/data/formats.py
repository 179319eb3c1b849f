"""`load_fixations`: one entry point for every fixation file format, chosen by the file's suffix.

========================  ===============================================  ============================
suffix                    format                                           ``stimuli``
========================  ===============================================  ============================
``.mat``                  NUS ``fixations.mat`` (MIT1003, OSIE; `nus_mat`)   the folder of the images
``.csv``, ``.tsv``,       a table ``image,x,y[,subject][,duration]``       the folder of the images
``.tab``                  (`csv`)
``.hdf5``, ``.h5``        pysaliency's HDF5 export (`pysaliency_hdf5`)     the FileStimuli HDF5 file,
                                                                           or None when the file holds it
========================  ===============================================  ============================
"""

from __future__ import annotations

import os
from pathlib import Path

from deepgaze_jax.data.csv import DELIMITERS, read_table
from deepgaze_jax.data.datasets import Dataset
from deepgaze_jax.data.nus_mat import load_nus_mat
from deepgaze_jax.data.pysaliency_hdf5 import read_pysaliency_hdf5

MAT_SUFFIXES = (".mat",)
HDF5_SUFFIXES = (".hdf5", ".h5")
SUFFIXES = MAT_SUFFIXES + tuple(DELIMITERS) + HDF5_SUFFIXES


def load_fixations(
    path: str | os.PathLike, stimuli: str | os.PathLike | None = None, drop_invalid: bool = False
) -> Dataset:
    """The `Dataset` of fixation file ``path``, read by the reader of its suffix (see the module docstring).

    Bad fixations raise an error naming the file, the record and the reason; with
    ``drop_invalid`` they are dropped and their number is logged as a warning.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown fixation file suffix {suffix!r}; use one of {', '.join(SUFFIXES)}")
    if suffix in HDF5_SUFFIXES:
        return read_pysaliency_hdf5(path, stimuli, drop_invalid=drop_invalid)[0]
    if stimuli is None:
        raise ValueError(f"{path}: give the folder of the images it names as stimuli")
    if suffix in MAT_SUFFIXES:
        return load_nus_mat(stimuli, path, on_invalid="drop" if drop_invalid else "raise")
    return read_table(path, stimuli, drop_invalid=drop_invalid)[0]
