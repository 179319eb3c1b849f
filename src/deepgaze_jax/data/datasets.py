"""`Dataset`: stimulus files plus their `Fixations`, and the paper's working space.

DeepGaze II (paper, sections 2.3 and 3) resizes every MIT1003 image to 1024x768
(landscape, W >= H) or 768x1024 (portrait), scaling the fixations with it, and
then downsamples by 2: the model sees 512x384 or 384x512 images (`paper_sizes`).
Other datasets keep their aspect ratio (`images.working_size`).

Readers of particular file layouts (`nus_mat`, `salicon`, via `matlab`) build `Dataset`s;
MIT1003 is found by `mit1003`. This module imports none of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from deepgaze_jax import images
from deepgaze_jax.data.fixations import Fixations


Mode = Literal["paper", "aspect"]


class DatasetFormatError(ValueError):
    """A dataset file that does not have the expected layout."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Images on disk and the fixations made on them.

    Attributes:
      stimuli: path of each image file; image ``i`` is ``stimuli[i]``.
      fixations: `Fixations` in the original image coordinates
        (``fixations.image_sizes[i]`` is the (height, width) of ``stimuli[i]``).
      name: a short label, e.g. "MIT1003".
    """

    stimuli: tuple[Path, ...]
    fixations: Fixations
    name: str

    def __post_init__(self) -> None:
        if len(self.stimuli) != self.fixations.num_images:
            raise ValueError(f"{len(self.stimuli)} stimuli but fixations on {self.fixations.num_images} images")

    def __len__(self) -> int:
        return len(self.stimuli)

    @property
    def image_sizes(self) -> np.ndarray:
        """(I, 2) int64 (height, width) of each image in pixels."""
        return self.fixations.image_sizes

    @property
    def stimulus_names(self) -> tuple[str, ...]:
        """File name of each image."""
        return tuple(path.name for path in self.stimuli)

    def load_image(self, i: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """Image ``i`` as (H, W, 3) uint8 RGB, resized to ``size`` (height, width) if given."""
        rgb = images.to_rgb_uint8(self.stimuli[i])
        if rgb.shape[:2] != tuple(self.image_sizes[i]):
            raise DatasetFormatError(
                f"{self.stimuli[i]} decodes to {rgb.shape[0]}x{rgb.shape[1]} but the dataset records "
                f"{self.image_sizes[i][0]}x{self.image_sizes[i][1]} (height x width)"
            )
        return rgb if size is None else images.resize(rgb, size)

    def subset(self, indices) -> "Dataset":
        """The images ``indices`` (in that order) with their fixations."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        return Dataset(
            stimuli=tuple(self.stimuli[i] for i in indices),
            fixations=self.fixations.subset_images(indices),
            name=self.name,
        )


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as displayed (EXIF orientation applied), read from its header."""
    try:
        with Image.open(path) as img:
            return images.oriented_size(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise images.ImageError(f"cannot read image {path}: {exc}") from exc


def paper_sizes(image_sizes) -> np.ndarray:
    """(I, 2) int64 working (height, width) per the paper: 384x512 if W >= H, else 512x384.

    That is 1024x768 / 768x1024 (by orientation, aspect ratio not kept) downsampled by 2.
    """
    sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
    landscape = sizes[:, 1] >= sizes[:, 0]
    return np.where(landscape[:, None], np.array([384, 512]), np.array([512, 384])).astype(np.int64)


def working_sizes(image_sizes, mode: Mode = "paper") -> np.ndarray:
    """(I, 2) int64 working (height, width): `paper_sizes`, or `images.working_size` for "aspect"."""
    if mode == "paper":
        return paper_sizes(image_sizes)
    if mode == "aspect":
        sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
        return np.array([images.working_size(int(h), int(w)) for h, w in sizes], dtype=np.int64).reshape(-1, 2)
    raise ValueError(f"mode must be 'paper' or 'aspect', got {mode!r}")


def to_working_space(
    dataset: Dataset, mode: Mode = "paper", workers: int | None = None, progress: bool = True
) -> tuple[list[np.ndarray], Fixations]:
    """All images resized to their working sizes, and the fixations rescaled with them.

    Returns a list of (h, w, 3) uint8 images (one resampling from the original, bicubic with
    antialiasing) and `Fixations` whose ``image_sizes`` are the working sizes. ``workers``
    threads (default: one per CPU core; 1: none) decode in parallel (PIL releases the GIL);
    ``progress`` shows a tqdm bar.
    """
    sizes = working_sizes(dataset.image_sizes, mode)
    workers = os.cpu_count() or 1 if workers is None else workers

    def load(i: int) -> np.ndarray:
        return dataset.load_image(i, tuple(int(s) for s in sizes[i]))

    bar = dict(total=len(dataset), desc=f"{dataset.name} to working space", disable=not progress, unit="img")
    if workers > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            loaded = list(tqdm(pool.map(load, range(len(dataset))), **bar))
    else:
        loaded = [load(i) for i in tqdm(range(len(dataset)), **bar)]
    return loaded, dataset.fixations.rescaled(sizes)


def stimulus_paths(folder: Path, names: Sequence[str], described_in: Path) -> tuple[Path, ...]:
    """``folder / name`` for each name; raises naming the first missing files and ``described_in``.

    A name that leaves ``folder`` (absolute, or climbing out with ``..``) is a `DatasetFormatError`:
    a fixations file only ever names images inside its stimuli folder.
    """
    outside = [name for name in names if _leaves_folder(name)]
    if outside:
        raise DatasetFormatError(
            f"{described_in} names {len(outside)} image(s) outside the stimuli folder {folder}, e.g. "
            f"{', '.join(map(repr, outside[:3]))}; image names must be relative paths inside that folder"
        )
    paths = tuple(folder / name for name in names)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {described_in} are missing, e.g. {', '.join(missing[:3])}"
        )
    return paths


def _leaves_folder(name: str) -> bool:
    """Whether the relative file name ``name`` points outside its folder (judged on the text, not the disk)."""
    normal = os.path.normpath(str(name).replace("\\", "/"))
    return os.path.isabs(normal) or normal == ".." or normal.startswith("../")


def find_dataset_root(
    name: str, root: str | os.PathLike | None, variable: str, required: Sequence[str], layout: str
) -> Path:
    """A dataset's folder: ``root``, else ``$variable``, else the first ``shared/datasets/<name>``.

    The shared folder is searched in the current directory, the package's directory and
    their parents. The folder must hold every path of ``required``; ``layout`` describes
    it for the error message.
    """
    from deepgaze_jax import settings

    given, source = (root, "root") if root is not None else (settings.get(variable), f"${variable}")
    if given is not None:
        path = Path(given).expanduser()
        missing = [r for r in required if not (path / r).exists()]
        if missing:
            raise FileNotFoundError(f"{name} folder {path} (from {source}) lacks {' and '.join(missing)}; it must hold {layout}")
        return path
    shared = Path("shared", "datasets", name.lower())
    starts = (Path.cwd(), Path(__file__).resolve().parent)
    for folder in (f / shared for start in starts for f in (start, *start.parents)):
        if all((folder / r).exists() for r in required):
            return folder
    raise FileNotFoundError(
        f"{name} not found: no {shared} in {' or '.join(map(str, starts))} or their parents. "
        f"Set {variable}=/path/to/{name.lower()} (the folder with {layout}) or pass root=."
    )
