"""Log densities on pixel grids: a floored log, normalisation, averaging and resizing.

A *log density* is an (H, W) array of log probabilities per pixel (nats), normalised so
that ``logsumexp(log_density) == 0`` (the paper's p(x, y | I) on the pixel grid). These
helpers are shared by the centre bias, the gold standard, the metrics, prediction and
the web service.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

TINY = float(np.finfo(np.float64).tiny)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def safe_log(p: np.ndarray) -> np.ndarray:
    """Elementwise log with a floor at the smallest normal float64 (no -inf, no warnings)."""
    return np.log(np.maximum(p, TINY))


def log_normalize(log_values: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``log_values`` shifted so that ``logsumexp == 0`` over all entries.

    The result has ``dtype`` (float64 by default; float32 halves the work on large
    images); the sum of exponentials is always accumulated in float64.
    """
    log_values = np.asarray(log_values, dtype=dtype)
    peak = log_values.max()
    return log_values - dtype(peak + np.log(np.exp(log_values - peak).sum(dtype=np.float64)))


def log_mean_density(log_densities: Sequence[np.ndarray], dtype=np.float64) -> np.ndarray:
    """``log(mean_k exp(log_densities[k]))``, normalised: the density of an ensemble of models.

    The models are averaged in probability (as DeepGaze IIE averages its backbones), not in
    log space. All log densities (nats) must have the same shape; the result has ``dtype``.
    """
    if len(log_densities) == 0:
        raise ValueError("log_mean_density needs at least one log density")
    shapes = {np.shape(d) for d in log_densities}
    if len(shapes) != 1:
        raise ValueError(f"log densities of different shapes cannot be averaged: {sorted(shapes)}")
    stack = np.stack([np.asarray(d, np.float64) for d in log_densities])
    peak = stack.max(axis=0)
    return log_normalize(peak + np.log(np.exp(stack - peak).mean(axis=0)), dtype)


def resize_log_density(log_density: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(h, w) log density (nats) -> (H, W) = ``shape`` float32 log density, logsumexp 0.

    Along an axis that shrinks, each new cell gets the probability mass of the cells it
    covers (area resampling, exact for integer factors); along an axis that grows, the log
    density is interpolated bilinearly (pixel centres aligned, edges held), as the model
    itself upsamples its readout before the softmax. Mass below ``FLOAT32_TINY`` times the
    peak is floored there, so the result is finite where the density underflows.
    """
    log_density = np.asarray(log_density, np.float32)
    (h, w), (rows, cols) = log_density.shape, (int(shape[0]), int(shape[1]))
    if rows < h or cols < w:
        peak = float(log_density.max())
        mass = Image.fromarray(np.exp(log_density - peak)).resize((min(cols, w), min(rows, h)), Image.Resampling.BOX)
        log_density = np.log(np.maximum(np.asarray(mass, np.float64), FLOAT32_TINY)).astype(np.float32)
    if rows > h or cols > w:
        log_density = np.asarray(Image.fromarray(log_density).resize((cols, rows), Image.Resampling.BILINEAR))
    return log_normalize(log_density, dtype=np.float32)
