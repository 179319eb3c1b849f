"""MIT/Tübingen saliency benchmark export: equalised grayscale maps and an HDF5 of log densities.

The benchmark ranks pixels (AUC) or compares normalised maps, and takes 8-bit images. A log
density is mapped to 256 gray levels by *histogram equalisation*: pixels are ranked by density
and split into 256 groups of equal size (pixel counts differ by at most one between levels),
ties broken stably by pixel order (row-major). The levels are monotone in the density.

The log densities themselves go to an HDF5 file in the layout of pysaliency's
``export_model_to_hdf5``: one float32 (H, W) dataset per image, named by the image's path
relative to the stimulus folder, which ``pysaliency.HDF5Model(stimuli, path)`` reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepgaze_jax.atomic_file import atomic_path

LEVELS = 256


def equalize(log_density: np.ndarray) -> np.ndarray:
    """(H, W) uint8 gray levels with equal pixel counts per level, non-decreasing in the density."""
    values = np.asarray(log_density).ravel()
    rank = np.empty(values.size, dtype=np.int64)
    rank[np.argsort(values, kind="stable")] = np.arange(values.size)
    return (rank * LEVELS // values.size).astype(np.uint8).reshape(np.shape(log_density))


def export_benchmark(
    log_densities: Iterable[np.ndarray],
    names: Sequence[str],
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("jpg",),
    jpeg_quality: int = 95,
    progress: bool = True,
) -> list[Path]:
    """Writes one equalised map per image as ``out_dir/<name stem>.<format>`` ("jpg" and/or "png").

    ``log_densities`` yields (H, W) log densities in the order of ``names`` (image file names;
    the benchmark expects the maps at the original image size). Returns the written paths.
    """
    unknown = set(formats) - {"jpg", "png"}
    if unknown:
        raise ValueError(f"formats must be 'jpg' and/or 'png', got {sorted(unknown)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    count = 0
    for name, log_density in tqdm(zip(names, log_densities), total=len(names), desc="export", disable=not progress):
        image = Image.fromarray(equalize(log_density))
        for fmt in formats:
            path = out_dir / f"{Path(name).stem}.{fmt}"
            image.save(path, **({"quality": jpeg_quality} if fmt == "jpg" else {}))
            written.append(path)
        count += 1
    if count != len(names):
        raise ValueError(f"{len(names)} names but {count} log densities")
    return written


HDF5_TYPE = "pysaliency.precomputed_models.predictions"


@contextlib.contextmanager
def hdf5_log_densities(path: str | os.PathLike) -> Iterator[Callable[[str, np.ndarray], None]]:
    """Context giving ``write(name, log_density)``; the file appears at ``path`` only on success.

    ``name`` is the image's path relative to the stimulus folder ("a.jpg", "sub/b.jpg"), which
    is how pysaliency's ``HDF5Model`` finds each stimulus's prediction; each (H, W) log density
    (nats) is stored as a gzip-compressed float32 dataset.
    """
    import h5py

    with atomic_path(path, suffix=".part") as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"type": HDF5_TYPE, "version": "1.0", "downscale_factor": 1, "dtype": "float32"})
        yield lambda name, log_density: f.create_dataset(
            name, data=np.asarray(log_density, np.float32), compression="gzip"
        )
