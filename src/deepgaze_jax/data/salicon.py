"""SALICON (Jiang et al., CVPR 2015) in its official release format: COCO images + per-image .mat files.

Each ``COCO_{train,val}2014_<id>.mat`` (MATLAB v5) holds

- ``image``: the image name (the file stem, ``COCO_val2014_<12-digit COCO id>``);
- ``resolution``: ``[height width]``, ``[480 640]`` for every SALICON image;
- ``gaze``: an (observers, 1) struct array with fields ``location`` ((n, 2) raw mouse
  samples ``[x y]``), ``timestamp`` ((n, 1) ms) and ``fixations`` ((k, 2) ``[x y]``
  fixations inferred from the mouse trajectory, 1-based integer pixel indices).

SALICON records mouse movements, not eye movements. The 2015 and 2017 editions share the
images but ship different fixation archives: the 2017 data were re-collected with a revised
mouse-tracking setup (its raw ``location`` samples can fall outside the image; pysaliency
clips them), so the fixations differ between editions. We read ``fixations``,
never ``location``. Observers are anonymous and differ per image: ``subject`` is the index
of the observer's record within one image's ``gaze`` array.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from tqdm import tqdm

from deepgaze_jax.data.datasets import Dataset, DatasetFormatError, read_image_size, stimulus_paths
from deepgaze_jax.data.matlab import cells, field, fixations_from_matlab, read_mat, vector

EDITIONS = ("2015", "2017")
SPLIT_DIRS = {"train": "train", "validation": "val"}  # TFDS split name -> release folder

INSTRUCTIONS = """\
SALICON has to be downloaded by hand from http://salicon.net/challenge-2017/ (Google Drive links):
  1. "Download Images (3.0G)": the COCO 2014 images, 640x480 JPEGs in images/{train,val,test}/.
  2. The fixation archive of the edition you build, with one .mat file per image in {train,val}/:
     - edition 2017: the "Fixations" download (train + val) on that page;
     - edition 2015: the "previous release of SALICON (Matlab files ... used in '15 and '16
       challenges)" linked on the same page: its fixations (train + val) archive.
Unpack them so that <manual_dir> contains
  <manual_dir>/images/train/COCO_train2014_<12-digit id>.jpg       10,000 files
  <manual_dir>/images/val/COCO_val2014_<12-digit id>.jpg           5,000 files
  <manual_dir>/fixations/<edition>/train/COCO_train2014_<id>.mat   one per training image
  <manual_dir>/fixations/<edition>/val/COCO_val2014_<id>.mat       one per validation image
with <edition> 2015 or 2017, e.g. `unzip <images archive> -d <manual_dir>` and
`unzip <fixations archive> -d <manual_dir>/fixations/2017` (the archive holds train/ and val/),
then pass download_config=tfds.download.DownloadConfig(manual_dir=<manual_dir>).
"""

# One observer's record: location (n, 2) [x y], timestamp (n,) ms, fixations (k, 2) [x y].
GazeRecord = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SaliconRecord:
    """One SALICON .mat file: image name, (height, width), and (k, 2) [x y] MATLAB-pixel fixations per observer."""

    image: str
    resolution: tuple[int, int]
    fixations: tuple[np.ndarray, ...]


def read_salicon_mat(path: str | os.PathLike) -> SaliconRecord:
    """Reads one per-image SALICON .mat file (the ``fixations`` of each observer, not ``location``)."""
    mat = read_mat(path)
    missing = [key for key in ("image", "resolution", "gaze") if key not in mat]
    if missing:
        raise DatasetFormatError(f"{path} lacks the SALICON variable(s) {', '.join(missing)}")
    if not isinstance(mat["image"], str):
        raise DatasetFormatError(f"{path}: 'image' should be the image name, got {mat['image']!r}")
    resolution = vector(mat["resolution"], f"{path}: resolution")
    if resolution.shape != (2,) or np.any(resolution <= 0) or np.any(resolution != np.round(resolution)):
        raise DatasetFormatError(f"{path}: 'resolution' should be [height width], got {mat['resolution']!r}")
    fixations = []
    for j, observer in enumerate(cells(mat["gaze"])):
        where = f"{path}: gaze({j + 1}).fixations"
        points = vector(field(observer, "fixations", f"{path}: gaze({j + 1})"), where)
        if points.size % 2:
            raise DatasetFormatError(f"{where} should be (k, 2) [x y], got {points.size} numbers")
        # squeeze_me turns one fixation (1, 2) into (2,) and leaves (k, 2): [x y] pairs either way.
        fixations.append(points.reshape(-1, 2))
    return SaliconRecord(mat["image"], (int(resolution[0]), int(resolution[1])), tuple(fixations))


def check_layout(root: str | os.PathLike, edition: str) -> None:
    """Raises `FileNotFoundError` with download instructions unless ``root`` holds ``edition``'s files."""
    if edition not in EDITIONS:
        raise ValueError(f"SALICON edition must be one of {EDITIONS}, got {edition!r}")
    root = Path(root)
    for split_dir in SPLIT_DIRS.values():
        required = ((root / "images" / split_dir, "*.jpg"), (root / "fixations" / edition / split_dir, "*.mat"))
        for folder, pattern in required:
            if not folder.is_dir() or next(folder.glob(pattern), None) is None:
                raise FileNotFoundError(f"SALICON {edition}: no {pattern} files in {folder}.\n{INSTRUCTIONS}")


def load_salicon(
    root: str | os.PathLike,
    edition: str,
    split: str,
    on_invalid: Literal["raise", "drop"] = "raise",
    progress: bool = True,
) -> Dataset:
    """One split ("train" or "validation") of a SALICON edition, images sorted by name.

    Fixations are in original image pixels (``x = fix_x - 0.5``, see `matlab.from_matlab_pixels`);
    image sizes are the files' ``resolution`` (checked against the JPEG headers).
    """
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {tuple(SPLIT_DIRS)}, got {split!r}")
    check_layout(root, edition)
    fixation_dir = Path(root) / "fixations" / edition / SPLIT_DIRS[split]
    mats = sorted(fixation_dir.glob("*.mat"))
    records = [read_salicon_mat(p) for p in tqdm(mats, desc=f"SALICON {edition} {split}", disable=not progress)]
    for mat_path, record in zip(mats, records):
        if Path(record.image).stem != mat_path.stem:
            raise DatasetFormatError(f"{mat_path} describes image {record.image!r}, not {mat_path.stem}")
    paths = stimulus_paths(Path(root) / "images" / SPLIT_DIRS[split], [p.stem + ".jpg" for p in mats], fixation_dir)
    sizes = np.array([r.resolution for r in records], dtype=np.int64).reshape(-1, 2)
    for mat_path, image_path, size in zip(mats, paths, sizes):
        actual = read_image_size(image_path)
        if actual != tuple(size):
            raise DatasetFormatError(f"{mat_path} gives resolution {tuple(size)} but {image_path} is {actual}")
    counts = [len(points) for r in records for points in r.fixations]
    points = np.concatenate([np.zeros((0, 2)), *(p for r in records for p in r.fixations)])
    n = np.repeat([i for i, r in enumerate(records) for _ in r.fixations], counts).astype(np.int64)
    subject = np.repeat([j for r in records for j in range(len(r.fixations))], counts).astype(np.int32)
    fixations = fixations_from_matlab(points[:, 0], points[:, 1], n, sizes, fixation_dir, on_invalid, subject=subject)
    return Dataset(stimuli=paths, fixations=fixations, name=f"SALICON {edition} {split}")


def save_salicon_mat(
    path: str | os.PathLike, image: str, resolution: tuple[int, int], gaze: Sequence[GazeRecord]
) -> None:
    """Writes one per-image file in the release layout: ``gaze`` an (observers, 1) struct array of doubles."""
    records = np.empty((len(gaze), 1), dtype=[("location", object), ("timestamp", object), ("fixations", object)])
    for j, (location, timestamp, fixations) in enumerate(gaze):
        records[j, 0] = (
            np.asarray(location, dtype=np.float64).reshape(-1, 2),
            np.asarray(timestamp, dtype=np.float64).reshape(-1, 1),
            np.asarray(fixations, dtype=np.float64).reshape(-1, 2),
        )
    scipy.io.savemat(
        path, {"image": image, "resolution": np.array([resolution], dtype=np.float64), "gaze": records}, format="5"
    )
