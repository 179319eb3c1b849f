"""Record-by-record checks of fixation files, shared by the CSV and pysaliency readers.

A *record* is one fixation as the file stores it (a CSV line, an entry of a pysaliency
array). Each unusable record becomes a `BadRecord` naming where it is and why; by
default the first few are raised together in a `FixationError` naming the file,
with ``drop_invalid=True`` they are dropped, counted by reason, and logged.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from deepgaze_jax.data.fixations import FixationError

log = logging.getLogger(__name__)
SHOWN_IN_ERRORS = 5  # bad records quoted in an error message


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """One unusable record: its position among the records, where it is in the file, and why."""

    index: int
    where: str  # e.g. "line 7" or "scanpath 3, fixation 2"
    reason: str  # a short category, counted by `DropReport`
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class DropReport:
    """What ``drop_invalid=True`` removed from one file: record counts by reason."""

    total: int
    dropped_by_reason: dict[str, int]

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())


def bounds_problems(
    x: np.ndarray, y: np.ndarray, n: np.ndarray, image_sizes: np.ndarray, where: Callable[[int], str]
) -> list[BadRecord]:
    """Records whose (x, y) is not finite or outside image ``n`` (sizes (I, 2) height, width), in 0-based pixels."""
    sizes = np.asarray(image_sizes, np.int64).reshape(-1, 2)[n]
    finite = np.isfinite(x) & np.isfinite(y)
    inside = finite & (x >= 0) & (y >= 0) & (x < sizes[:, 1]) & (y < sizes[:, 0])
    problems = []
    for i in np.flatnonzero(~inside):
        point = f"x={x[i]:g}, y={y[i]:g}"
        if finite[i]:
            extent = f"0 <= x < {sizes[i, 1]}, 0 <= y < {sizes[i, 0]}"
            problems.append(BadRecord(int(i), where(int(i)), "outside the image", f"{point} not in {extent}"))
        else:
            problems.append(BadRecord(int(i), where(int(i)), "coordinate not finite", point))
    return problems


def _describe(problem: BadRecord) -> str:
    return f"{problem.where}: {problem.reason}" + (f" ({problem.detail})" if problem.detail else "")


def keep_mask(
    problems: Sequence[BadRecord], total: int, source: str | os.PathLike, drop_invalid: bool
) -> tuple[np.ndarray, DropReport]:
    """(total,) bool mask of the records to keep and the report of the dropped ones.

    A record with several problems counts once, under the first. Raises a
    `FixationError` naming ``source`` and the first bad records unless
    ``drop_invalid``; then logs a warning with the counts. Also raises when the file holds
    no fixations, or none is left.
    """
    if total == 0:
        raise FixationError(f"{source} holds no fixation records")
    first: dict[int, BadRecord] = {}
    for problem in problems:
        first.setdefault(problem.index, problem)
    problems = list(first.values())
    if problems and not drop_invalid:
        shown = "; ".join(_describe(p) for p in problems[:SHOWN_IN_ERRORS])
        more = f" and {len(problems) - SHOWN_IN_ERRORS} more" if len(problems) > SHOWN_IN_ERRORS else ""
        raise FixationError(
            f"{source}: {len(problems)} bad fixation record(s): {shown}{more}. "
            "Fix the file, or pass drop_invalid=True (--drop-invalid) to drop and count them."
        )
    keep = np.ones(total, bool)
    keep[[p.index for p in problems]] = False
    report = DropReport(total=total, dropped_by_reason=dict(collections.Counter(p.reason for p in problems)))
    if not keep.any():
        raise FixationError(f"{source}: all {total} fixation records are bad, e.g. {_describe(problems[0])}")
    if report.dropped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in report.dropped_by_reason.items())
        log.warning("%s: dropped %d of %d fixation records (%s)", source, report.dropped, total, reasons)
    return keep, report
