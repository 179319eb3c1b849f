"""Pseudo-fixations from mouse trajectories, as SALICON derived them (Jiang et al., CVPR 2015).

In mouse-contingent free viewing the observer moves a sharp window over a blurred image
with the mouse; SALICON turns the mouse samples into "fixations" by discarding the fast
movements (the mouse's saccades) and keeping where the mouse moves slowly. Here, for each
trajectory (one observer viewing one image, samples in recording order):

1. the step length ``d_k = |p_{k+1} - p_k|`` (pixels) between consecutive samples is the
   velocity in pixels per sample (releases such as OSIE's carry no timestamps);
2. consecutive samples joined by steps ``d_k <= max_step_px`` form a slow run (velocity
   threshold identification, I-VT; Salvucci & Goldberg 2000). A sample with fast steps on
   both sides belongs to no run: nothing shows the mouse resting there;
3. a slow run whose dispersion ``(max x - min x) + (max y - min y)`` exceeds
   ``max_dispersion_px`` (a slow drift across the image) is cut, in recording order, into
   windows of at most that dispersion (dispersion threshold identification, I-DT, same
   paper), so that a drift gives fixations along its path rather than one at its middle;
4. each run or window of at least ``min_samples`` samples is one pseudo-fixation, at the
   mean of its samples.

docs/osie.md gives the defaults' justification from the OSIE data (`experiments.osie_stats`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PseudoFixationConfig:
    """Parameters of the pseudo-fixation procedure (module docstring), in original image pixels.

    The defaults are for OSIE's 800x600 images: ``max_step_px`` 24, the NUS tools' fixation-map
    scale (about 1 degree), just above where the slow mode of both OSIE mouse sources' step
    lengths has decayed onto the plateau of fast steps; ``max_dispersion_px`` 48 (about 2
    degrees, the central high-acuity region); ``min_samples`` 2 (one slow step).
    """

    max_step_px: float = 24.0
    max_dispersion_px: float = 48.0
    min_samples: int = 2

    def __post_init__(self) -> None:
        if not (self.max_step_px > 0 and self.max_dispersion_px > 0):
            raise ValueError(
                f"max_step_px and max_dispersion_px must be positive, got {self.max_step_px}, {self.max_dispersion_px}"
            )
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")


@dataclasses.dataclass(frozen=True, eq=False)
class PseudoFixations:
    """Pseudo-fixations of a set of trajectories.

    Attributes:
      x, y: (F,) float64 mean position of each fixation's samples (the input's units).
      trajectory: (F,) int64 index of the trajectory each fixation comes from.
      num_samples: (F,) int64 number of mouse samples averaged into each fixation.
    """

    x: np.ndarray
    y: np.ndarray
    trajectory: np.ndarray
    num_samples: np.ndarray


def trajectory_starts(subject: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(n,) bool: True where a new trajectory begins, for samples stored trajectory by trajectory.

    A trajectory begins at the first sample, where the observer changes, and where the
    sample's ``order`` is not the previous one's plus 1 (an observer who saw the image twice).
    """
    subject, order = np.asarray(subject).reshape(-1), np.asarray(order).reshape(-1)
    starts = np.ones(len(subject), dtype=bool)
    starts[1:] = (subject[1:] != subject[:-1]) | (order[1:] != order[:-1] + 1)
    return starts


def slow_run_starts(x: np.ndarray, y: np.ndarray, starts: np.ndarray, max_step_px: float) -> np.ndarray:
    """(n,) bool: True at the first sample of each slow run (a trajectory start or after a fast step)."""
    steps = np.hypot(np.diff(x), np.diff(y))
    run_starts = np.asarray(starts, dtype=bool).copy()
    run_starts[1:] |= steps > max_step_px
    return run_starts


def _dispersions(x: np.ndarray, y: np.ndarray, group_starts: np.ndarray) -> np.ndarray:
    """(G,) dispersion (max x - min x) + (max y - min y) of each contiguous group of samples."""
    first = np.flatnonzero(group_starts)
    return sum(np.maximum.reduceat(v, first) - np.minimum.reduceat(v, first) for v in (x, y))


def dispersion_window_starts(
    x: np.ndarray, y: np.ndarray, first: np.ndarray, lengths: np.ndarray, max_dispersion_px: float
) -> np.ndarray:
    """(n,) bool: runs ``x[first[r] : first[r] + lengths[r]]`` cut greedily into windows of dispersion <= the limit.

    A window grows sample by sample, in order, and a new one starts at the sample that would
    push its dispersion past ``max_dispersion_px``; each run's first sample starts a window.
    All runs advance together, one sample position per step (vectorised over runs).
    """
    order = np.argsort(-lengths, kind="stable")
    first, lengths = first[order], lengths[order]
    cuts = np.zeros(len(x), dtype=bool)
    cuts[first] = True
    box = np.stack([x[first], x[first], y[first], y[first]])  # (4, R) min x, max x, min y, max y of each window
    for j in range(1, int(lengths.max(initial=0))):
        active = int(np.searchsorted(-lengths, -j, side="left"))  # runs longer than j: a prefix
        k = first[:active] + j
        grown = np.stack([
            np.minimum(box[0, :active], x[k]), np.maximum(box[1, :active], x[k]),
            np.minimum(box[2, :active], y[k]), np.maximum(box[3, :active], y[k]),
        ])
        cut = (grown[1] - grown[0]) + (grown[3] - grown[2]) > max_dispersion_px
        cuts[k[cut]] = True
        box[:, :active] = np.where(cut, np.stack([x[k], x[k], y[k], y[k]]), grown)
    return cuts


def fixation_starts(x: np.ndarray, y: np.ndarray, starts: np.ndarray, config: PseudoFixationConfig) -> np.ndarray:
    """(n,) bool: True at the first sample of each candidate fixation (steps 1-3 of the module docstring)."""
    run_starts = slow_run_starts(x, y, starts, config.max_step_px)
    first = np.flatnonzero(run_starts)
    lengths = np.diff(np.append(first, len(x)))
    wide = _dispersions(x, y, run_starts) > config.max_dispersion_px
    return run_starts | dispersion_window_starts(x, y, first[wide], lengths[wide], config.max_dispersion_px)


def pseudo_fixations(
    x, y, starts, config: PseudoFixationConfig = PseudoFixationConfig()
) -> PseudoFixations:
    """Pseudo-fixations of mouse samples ``x``, ``y`` ((n,) each, trajectory by trajectory in recording order).

    ``starts`` ((n,) bool, e.g. from `trajectory_starts`) marks the first sample of each
    trajectory; fixations never span two trajectories.
    """
    x, y = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    starts = np.asarray(starts, dtype=bool).reshape(-1)
    if not len(x) == len(y) == len(starts):
        raise ValueError(f"x, y and starts must have the same length, got {len(x)}, {len(y)}, {len(starts)}")
    if len(x) == 0:
        empty = np.zeros(0)
        return PseudoFixations(empty, empty, empty.astype(np.int64), empty.astype(np.int64))
    if not starts[0]:
        raise ValueError("starts[0] must be True: the first sample begins a trajectory")
    window_starts = fixation_starts(x, y, starts, config)
    label = np.cumsum(window_starts) - 1
    counts = np.bincount(label)
    keep = counts >= config.min_samples
    trajectory = (np.cumsum(starts) - 1)[window_starts]
    return PseudoFixations(
        x=(np.bincount(label, weights=x) / counts)[keep],
        y=(np.bincount(label, weights=y) / counts)[keep],
        trajectory=trajectory[keep].astype(np.int64),
        num_samples=counts[keep].astype(np.int64),
    )
