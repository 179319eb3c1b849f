"""`Dataset`: stimulus files plus their `Fixations`, MIT1003, and the paper's working space.

DeepGaze II (paper, sections 2.3 and 3) resizes every MIT1003 image to 1024x768
(landscape, W >= H) or 768x1024 (portrait), scaling the fixations with it, and
then downsamples by 2: the model sees 512x384 or 384x512 images (`paper_sizes`).
Other datasets keep their aspect ratio (`images.working_size`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from deepgaze_jax import images
from deepgaze_jax.data.fixations import FixationError, Fixations

log = logging.getLogger(__name__)
MIT1003_ENV = "DEEPGAZE_JAX_MIT1003"
MIT1003_SUBJECTS = ("CNG", "ajs", "emb", "ems", "ff", "hp", "jcw", "jw", "kae", "krl", "po", "tmj", "tu", "ya", "zb")
_MIT1003_SHARED = Path("shared", "datasets", "mit1003")

# MATLAB shows pixel k (1-based) centred on k, i.e. the image spans [0.5, W + 0.5]. Dataset
# tools filter "inside" loosely (NUS: 0 < fix_x <= W), so a few points lie up to half a pixel
# outside the image after the shift to 0-based coordinates; those are moved onto the border pixel.
MATLAB_BORDER_MARGIN = 0.5

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


def find_mit1003_root(root: str | os.PathLike | None = None) -> Path:
    """The MIT1003 folder (holding ``stimuli/`` and ``fixations.mat``).

    ``root`` if given, else ``$DEEPGAZE_JAX_MIT1003``, else the first ``shared/datasets/mit1003``
    found in the current directory, the package's directory, or any of their parents.
    """
    if root is None and os.environ.get(MIT1003_ENV):
        root, source = os.environ[MIT1003_ENV], f"${MIT1003_ENV}"
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
    from deepgaze_jax.data.nus_mat import load_nus_mat  # nus_mat builds Datasets: import here, not at the top

    path = find_mit1003_root(root)
    return load_nus_mat(
        path / "stimuli", path / "fixations.mat", on_invalid=on_invalid, subject_names=MIT1003_SUBJECTS, name="MIT1003"
    )


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
    threads decode in parallel (PIL releases the GIL); ``progress`` shows a tqdm bar.
    """
    sizes = working_sizes(dataset.image_sizes, mode)

    def load(i: int) -> np.ndarray:
        return dataset.load_image(i, tuple(int(s) for s in sizes[i]))

    bar = dict(total=len(dataset), desc=f"{dataset.name} to working space", disable=not progress, unit="img")
    if workers and workers > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            loaded = list(tqdm(pool.map(load, range(len(dataset))), **bar))
    else:
        loaded = [load(i) for i in tqdm(range(len(dataset)), **bar)]
    return loaded, dataset.fixations.rescaled(sizes)


def stimulus_paths(folder: Path, names: Sequence[str], described_in: Path) -> tuple[Path, ...]:
    """``folder / name`` for each name; raises naming the first missing files and ``described_in``."""
    paths = tuple(folder / name for name in names)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {described_in} are missing, e.g. {', '.join(missing[:3])}"
        )
    return paths
