"""The `Fixations` container: eye-tracking fixations on a set of images.

Coordinates are continuous, 0-based image coordinates in pixels: pixel ``(row i,
column j)`` covers ``[j, j+1) x [i, i+1)``, so a point is inside an image of
height H and width W when ``0 <= x < W`` and ``0 <= y < H``. MATLAB's 1-based
pixel-centre coordinates (as in MIT1003's ``fixations.mat``) convert with
``x = fix_x - 0.5``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np


class FixationError(ValueError):
    """Fixation data that cannot be used as given (NaNs, out of bounds, shape mismatch)."""


@dataclasses.dataclass(frozen=True)
class InvalidReport:
    """What `Fixations.create(..., on_invalid="drop")` removed, by reason."""

    non_finite: int
    out_of_bounds: int
    bad_image_index: int
    images_without_fixations: tuple[int, ...]

    @property
    def dropped(self) -> int:
        return self.non_finite + self.out_of_bounds + self.bad_image_index


@dataclasses.dataclass(frozen=True, eq=False)
class Fixations:
    """Fixations on ``len(image_sizes)`` images.

    Attributes:
      x, y: (N,) float64 pixel coordinates (see module docstring).
      n: (N,) int32 index of the image each fixation is on.
      subject: (N,) int32 observer index (-1 when unknown).
      duration: (N,) float32 fixation durations in ms, or None.
      image_sizes: (I, 2) int64 array of (height, width) per image, in pixels.
      subject_names: optional names of the observers, indexed by ``subject``.

    Build it with `Fixations.create`, which validates; the constructor trusts its input.
    """

    x: np.ndarray
    y: np.ndarray
    n: np.ndarray
    subject: np.ndarray
    image_sizes: np.ndarray
    duration: np.ndarray | None = None
    subject_names: tuple[str, ...] | None = None

    @classmethod
    def create(
        cls,
        x,
        y,
        n,
        image_sizes,
        subject=None,
        duration=None,
        subject_names=None,
        on_invalid: Literal["raise", "drop"] = "raise",
    ) -> tuple["Fixations", InvalidReport]:
        """Validates and builds a `Fixations`; returns it with a report of what was invalid.

        Invalid fixations (NaN/inf coordinates, outside their image, image index out
        of range) raise a `FixationError` naming the first offenders, or are dropped
        and counted with ``on_invalid="drop"``. Images left without any fixation are
        listed in the report (they are legal: evaluation skips them).
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        n = np.asarray(n).reshape(-1)
        sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
        count = x.shape[0]
        subject = np.full(count, -1, np.int32) if subject is None else np.asarray(subject).reshape(-1)
        arrays = {"y": y, "n": n, "subject": subject}
        if duration is not None:
            duration = np.asarray(duration, dtype=np.float32).reshape(-1)
            arrays["duration"] = duration
        for name, arr in arrays.items():
            if arr.shape[0] != count:
                raise FixationError(f"shape mismatch: x has {count} entries but {name} has {arr.shape[0]}")
        if np.any(sizes <= 0):
            raise FixationError(f"image sizes must be positive, got {sizes[np.any(sizes <= 0, axis=1)][:3].tolist()}")
        if not np.issubdtype(n.dtype, np.integer):
            if np.any(n != np.round(n)):
                raise FixationError("image indices n must be integers")
            n = n.astype(np.int64)

        bad_index = (n < 0) | (n >= len(sizes))
        n_safe = np.where(bad_index, 0, n)
        finite = np.isfinite(x) & np.isfinite(y)
        inside = (x >= 0) & (y >= 0) & (x < sizes[n_safe, 1]) & (y < sizes[n_safe, 0])
        non_finite = ~finite & ~bad_index
        out_of_bounds = finite & ~inside & ~bad_index
        invalid = bad_index | non_finite | out_of_bounds
        if invalid.any() and on_invalid == "raise":
            first = np.flatnonzero(invalid)[:5]
            detail = ", ".join(
                f"#{i} (x={x[i]:.2f}, y={y[i]:.2f}, image {n[i]}"
                + (f" of size {sizes[n[i]][0]}x{sizes[n[i]][1]})" if not bad_index[i] else " does not exist)")
                for i in first
            )
            raise FixationError(
                f"{int(invalid.sum())} invalid fixations ({int(non_finite.sum())} NaN/inf, "
                f"{int(out_of_bounds.sum())} out of bounds, {int(bad_index.sum())} bad image index): {detail}. "
                "Pass on_invalid='drop' to drop them."
            )
        keep = ~invalid
        fixations = cls(
            x=x[keep],
            y=y[keep],
            n=n[keep].astype(np.int32),
            subject=subject[keep].astype(np.int32),
            image_sizes=sizes,
            duration=None if duration is None else duration[keep],
            subject_names=None if subject_names is None else tuple(subject_names),
        )
        counts = np.bincount(fixations.n, minlength=len(sizes))
        report = InvalidReport(
            non_finite=int(non_finite.sum()),
            out_of_bounds=int(out_of_bounds.sum()),
            bad_image_index=int(bad_index.sum()),
            images_without_fixations=tuple(int(i) for i in np.flatnonzero(counts == 0)),
        )
        return fixations, report

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.image_sizes.shape[0])

    @property
    def num_subjects(self) -> int:
        return int(self.subject.max()) + 1 if len(self) else 0

    def counts_per_image(self) -> np.ndarray:
        """(I,) number of fixations on each image."""
        return np.bincount(self.n, minlength=self.num_images)

    def relative(self) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates as fractions of image width and height, in [0, 1)."""
        sizes = self.image_sizes[self.n]
        return self.x / sizes[:, 1], self.y / sizes[:, 0]

    def rescaled(self, new_sizes) -> "Fixations":
        """The same fixations on the images resized to ``new_sizes`` ((I, 2) height, width).

        Each image is stretched independently along both axes, so relative positions stay.
        """
        new_sizes = np.asarray(new_sizes, dtype=np.int64).reshape(-1, 2)
        if new_sizes.shape != self.image_sizes.shape:
            raise FixationError(f"need {self.num_images} new sizes, got {new_sizes.shape[0]}")
        rx, ry = self.relative()
        target = new_sizes[self.n]
        x = np.minimum(rx * target[:, 1], np.nextafter(target[:, 1], 0))
        y = np.minimum(ry * target[:, 0], np.nextafter(target[:, 0], 0))
        return dataclasses.replace(self, x=x, y=y, image_sizes=new_sizes)

    def select(self, mask: np.ndarray) -> "Fixations":
        """The fixations where ``mask`` (N,) is true; images are kept as they are."""
        mask = np.asarray(mask, dtype=bool)
        return dataclasses.replace(
            self,
            x=self.x[mask],
            y=self.y[mask],
            n=self.n[mask],
            subject=self.subject[mask],
            duration=None if self.duration is None else self.duration[mask],
        )

    def subset_images(self, indices) -> "Fixations":
        """The fixations on images ``indices``, renumbered 0..len(indices)-1 in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        new_index = np.full(self.num_images, -1, np.int64)
        new_index[indices] = np.arange(len(indices))
        kept = self.select(new_index[self.n] >= 0)
        return dataclasses.replace(kept, n=new_index[kept.n].astype(np.int32), image_sizes=self.image_sizes[indices])

    def pixel_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) int arrays of the pixel each fixation falls in."""
        return np.floor(self.y).astype(np.int64), np.floor(self.x).astype(np.int64)
