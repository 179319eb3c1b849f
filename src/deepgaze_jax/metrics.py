"""Saliency metrics for fixation densities.

Conventions:
  * A *log density* is an (H, W) array of log probabilities per pixel (nats), normalised
    so that ``logsumexp(log_density) == 0`` (the paper's p(x, y | I) on the pixel grid).
  * Fixations on one image are given as integer pixel indices ``rows, cols`` ((n,) each),
    e.g. from `Fixations.pixel_indices`.
  * Log-likelihoods are reported in **bits per fixation relative to the uniform model**,
    ``(log p(x) + log(H W)) / ln 2`` (the paper's section 2.4): 0 for the uniform model.
  * Map metrics (AUC, NSS, CC, KL, SIM) are computed on the density ``p = exp(log_density)``
    itself (not a metric-specific saliency map).

The Gaussian KDE behind the empirical maps is `deepgaze_jax.kde`; log-density helpers
(`log_normalize`, ...) are in `deepgaze_jax.densities`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from typing import Callable

import numpy as np
from tqdm import tqdm

from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import log_normalize
from deepgaze_jax.kde import kde_grid, relative_cells

LN2 = float(np.log(2.0))
# Empirical fixation maps for CC / KL / SIM: Gaussian of 1 degree of visual angle, which the
# MIT saliency benchmark puts at ~35 px on its 1024 px images (8 cycles per image): sigma is
# 35/1024 of the image's longer side (17.5 px at the 512x384 evaluation size).
EMPIRICAL_SIGMA_REL = 35.0 / 1024.0

LogDensityFn = Callable[[int], np.ndarray]


# --- empirical maps --------------------------------------------------------------------------


def empirical_map(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], sigma: float | None = None) -> np.ndarray:
    """(H, W) float64 empirical fixation density: fixation histogram blurred by a Gaussian.

    ``sigma`` in pixels defaults to `EMPIRICAL_SIGMA_REL` times the longer side (1 degree of
    visual angle in the MIT benchmark's convention). Sums to 1; every fixation counts once.
    """
    sigma = EMPIRICAL_SIGMA_REL * max(shape) if sigma is None else sigma
    return kde_grid(rows, cols, shape, sigma, sigma)


# --- per-fixation metrics on one image -----------------------------------------------------


def bits_over_uniform(log_p_nats: np.ndarray, num_pixels) -> np.ndarray:
    """Log-likelihoods in nats per pixel -> bits per fixation over uniform: (log p + log HW) / ln 2."""
    return (np.asarray(log_p_nats, dtype=np.float64) + np.log(np.asarray(num_pixels, dtype=np.float64))) / LN2


def log_likelihood_bits(log_density: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n,) log-likelihood of each fixation in bits over the uniform model (0 for uniform)."""
    return bits_over_uniform(np.asarray(log_density, dtype=np.float64)[rows, cols], log_density.size)


def rank_auc(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """(n,) per-positive AUC: fraction of ``negatives`` below each positive, ties counting half.

    The mean over positives is the Mann-Whitney AUC (area under the ROC curve).
    """
    negatives = np.sort(np.asarray(negatives).reshape(-1))
    positives = np.asarray(positives, dtype=negatives.dtype)
    below = np.searchsorted(negatives, positives, side="left")
    not_above = np.searchsorted(negatives, positives, side="right")
    return (below + 0.5 * (not_above - below)) / len(negatives)


def auc_per_fixation(log_density: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n,) AUC of each fixation against *all* pixels of the image as negatives (ties half).

    The image's AUC is the mean over its fixations (fixated pixels are also negatives, as in
    pysaliency; duplicate fixations count each time).
    """
    return rank_auc(log_density[rows, cols], log_density)


def sauc_per_fixation(
    log_density: np.ndarray, rows: np.ndarray, cols: np.ndarray, neg_rows: np.ndarray, neg_cols: np.ndarray
) -> np.ndarray:
    """(n,) shuffled AUC of each fixation: negatives are the pixels ``neg_rows, neg_cols``.

    The negatives are the fixations on *other* images, their relative coordinates scaled to
    this image's size (the caller maps them; see `evaluate_log_densities`). Ties count half.
    """
    return rank_auc(log_density[rows, cols], log_density[neg_rows, neg_cols])


def auc_judd(log_density: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Judd's AUC (MIT benchmark): ROC area with thresholds at the fixated values.

    Positives are the fixated pixels (a pixel fixated several times counts once), negatives
    the non-fixated pixels; at each distinct fixated value t, TPR = fraction of positives >= t
    and FPR = fraction of negatives >= t; the curve from (0, 0) to (1, 1) is integrated by
    trapezoids. Ties are handled exactly (the MIT code jitters the map instead).
    """
    values = np.asarray(log_density)
    fixated = np.zeros(values.shape, dtype=bool)
    fixated[rows, cols] = True
    positives = np.sort(values[fixated])
    negatives = np.sort(values[~fixated])
    thresholds = np.unique(positives)[::-1]
    tpr = (len(positives) - np.searchsorted(positives, thresholds, side="left")) / len(positives)
    fpr = (len(negatives) - np.searchsorted(negatives, thresholds, side="left")) / max(len(negatives), 1)
    tpr = np.concatenate([[0.0], tpr, [1.0]])
    fpr = np.concatenate([[0.0], fpr, [1.0]])
    return float(np.trapezoid(tpr, fpr))


def nss_per_fixation(log_density: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n,) normalised scanpath saliency: the density standardised over pixels, at each fixation.

    (p - mean(p)) / std(p); 0 for a constant map (std 0). Unitless (standard deviations).
    """
    density = np.exp(np.asarray(log_density, dtype=np.float64))
    if np.ptp(density) == 0:
        return np.zeros(len(rows))
    return (density[rows, cols] - density.mean()) / density.std()


# --- map metrics on one image --------------------------------------------------------------


def correlation_coefficient(log_density: np.ndarray, empirical: np.ndarray) -> float:
    """Pearson CC between the density and the empirical map (in [-1, 1]; 0 if either is constant)."""
    a = np.exp(np.asarray(log_density, dtype=np.float64)).ravel()
    b = np.asarray(empirical, dtype=np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def kl_divergence_nats(empirical: np.ndarray, log_density: np.ndarray) -> float:
    """KL(empirical || model) in nats: sum_x e(x) (log e(x) - log p(x)), e normalised to sum 1.

    The model's log density is finite everywhere, so no epsilon is needed (the MIT code adds
    2.2e-16); pixels where the empirical map is 0 contribute 0 (0 log 0 = 0). >= 0.
    """
    e = np.asarray(empirical, dtype=np.float64)
    e = e / e.sum()
    positive = e > 0
    terms = e[positive] * (np.log(e[positive]) - np.asarray(log_density, dtype=np.float64)[positive])
    return float(max(terms.sum(), 0.0))


def similarity(log_density: np.ndarray, empirical: np.ndarray) -> float:
    """SIM (histogram intersection): sum_x min(p(x), e(x)) with both normalised to sum 1; in [0, 1]."""
    p = np.exp(log_normalize(log_density))
    e = np.asarray(empirical, dtype=np.float64)
    return float(np.minimum(p, e / e.sum()).sum())


# --- dataset level -------------------------------------------------------------------------


def per_image_means(values: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(I',) mean of per-fixation ``values`` over each image that has fixations (in index order)."""
    counts = np.bincount(image)
    return np.bincount(image, weights=values)[counts > 0] / counts[counts > 0]


def _shuffled_negatives(fixations: Fixations, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices of *all* fixations at image size ``size``, by relative coordinates."""
    rx, ry = fixations.relative()
    return relative_cells(ry, size[0]), relative_cells(rx, size[1])


def _image_log_density(log_density_fn: LogDensityFn, i, size: tuple[int, int]) -> np.ndarray:
    """Image ``i``'s log density from ``log_density_fn``; an error unless its shape is ``size``."""
    log_density = np.asarray(log_density_fn(int(i)))
    if log_density.shape != size:
        raise ValueError(f"log density of image {i} has shape {log_density.shape}, fixations say {size}")
    return log_density


def _negatives_of(cache: dict, fixations: Fixations, size: tuple[int, int], i) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns, on an image of ``size``, of the fixations on every image but ``i`` (cached per size)."""
    if size not in cache:
        cache[size] = _shuffled_negatives(fixations, size)
    other = fixations.n != i
    return cache[size][0][other], cache[size][1][other]


MAX_SCORE_WORKERS = 8
"""At most this many scoring threads: each holds a few float64 full-size maps, and NumPy's BLAS has its own."""


def score_workers() -> int:
    """Threads for scoring stored maps: the CPU cores this process may use, at most `MAX_SCORE_WORKERS`."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_SCORE_WORKERS))


def evaluate_log_densities(
    log_density_fn: LogDensityFn,
    fixations: Fixations,
    baseline_fn: LogDensityFn | None = None,
    gold_loglik: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "evaluating",
    workers: int = 1,
) -> dict:
    """Every metric of a model over a dataset.

    Args:
      log_density_fn: image index i -> (H_i, W_i) log density on the grid of ``fixations``.
      fixations: the fixations to score (images without fixations are skipped).
      baseline_fn: optional baseline (the centre bias, paper section 2.4) for information gain.
      gold_loglik: optional (N,) per-fixation log-likelihoods of the gold standard, nats per
        pixel, for the information gain explained.
      workers: images scored at once, on threads (the scores are NumPy, which releases the GIL in its array
        loops): for a cheap ``log_density_fn`` (e.g. stored maps), `score_workers`; the results do not depend
        on it. With more than one, ``log_density_fn`` and ``baseline_fn`` must be thread-safe; with one (the
        default) everything runs on the calling thread.

    Returns a flat dict. Scalars: ``ll_bits`` (bits/fixation over uniform, mean over fixations
    as in the paper) and ``ll_bits_imgavg`` (mean of per-image means); ``auc``/``sauc``/``nss``
    (+ ``_imgavg``) averaged the same ways; ``auc_judd``, ``cc``, ``kl_nats``, ``sim`` (per-image
    metrics, mean over images); with a baseline ``baseline_ll_bits``, ``ig_bits``,
    ``ig_bits_imgavg`` (model minus baseline, bits/fixation); with a gold standard
    ``gold_ll_bits``, ``gold_ll_bits_imgavg`` and ``ig_explained_pct`` = 100 (LL_model - LL_base)
    / (LL_gold - LL_base), with LL_base = 0 (uniform) when there is no baseline (left out when
    the gold standard does not beat the baseline, where it is undefined). Arrays
    ``per_image_<metric>`` ((I',) over the I' images with fixations, listed in
    ``per_image_index``) hold the per-image values for plots.
    """
    sizes = fixations.image_sizes
    rows_all, cols_all = fixations.pixel_indices()
    images = np.flatnonzero(fixations.counts_per_image() > 0)
    order = np.argsort(fixations.n, kind="stable")
    starts = np.searchsorted(fixations.n[order], images)
    ends = np.searchsorted(fixations.n[order], images, side="right")
    negatives: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def score(k: int) -> tuple[np.ndarray, dict, dict]:
        """(fixation indices, per-fixation scores, per-image scores) of the k-th image with fixations."""
        i, idx = images[k], order[starts[k] : ends[k]]
        rows, cols = rows_all[idx], cols_all[idx]
        size = (int(sizes[i, 0]), int(sizes[i, 1]))
        log_density = _image_log_density(log_density_fn, i, size)
        neg_rows, neg_cols = _negatives_of(negatives, fixations, size, i)
        fix = {"ll_bits": log_likelihood_bits(log_density, rows, cols), "auc": auc_per_fixation(log_density, rows, cols),
               "sauc": sauc_per_fixation(log_density, rows, cols, neg_rows, neg_cols) if len(neg_rows) else 0.5,
               "nss": nss_per_fixation(log_density, rows, cols)}
        if baseline_fn is not None:
            fix["baseline_ll_bits"] = log_likelihood_bits(np.asarray(baseline_fn(int(i))), rows, cols)
        empirical = empirical_map(rows, cols, size)
        image = {"auc_judd": auc_judd(log_density, rows, cols), "cc": correlation_coefficient(log_density, empirical),
                 "kl_nats": kl_divergence_nats(empirical, log_density), "sim": similarity(log_density, empirical)}
        return idx, fix, image

    per_fix = {k: np.zeros(len(fixations)) for k in ("ll_bits", "auc", "sauc", "nss", "baseline_ll_bits")}
    per_image = {k: np.zeros(len(images)) for k in ("auc_judd", "cc", "kl_nats", "sim")}
    with contextlib.ExitStack() as stack:
        if workers > 1:
            scored = stack.enter_context(concurrent.futures.ThreadPoolExecutor(workers)).map(score, range(len(images)))
        else:
            scored = map(score, range(len(images)))
        for k, (idx, fix, image) in enumerate(tqdm(scored, total=len(images), desc=desc, disable=not progress, unit="img")):
            for key, values in fix.items():
                per_fix[key][idx] = values
            for key, value in image.items():
                per_image[key][k] = value

    if gold_loglik is not None:
        per_fix["gold_ll_bits"] = bits_over_uniform(gold_loglik, np.prod(sizes[fixations.n], axis=1))
    if baseline_fn is not None:
        per_fix["ig_bits"] = per_fix["ll_bits"] - per_fix["baseline_ll_bits"]
    else:
        del per_fix["baseline_ll_bits"]

    result: dict = {"num_images": int(len(images)), "num_fixations": int(len(fixations))}
    for key, values in per_fix.items():
        means = per_image_means(values, fixations.n)
        result[key] = float(values.mean())
        result[f"{key}_imgavg"] = float(means.mean())
        result[f"per_image_{key}"] = means
    for key, values in per_image.items():
        result[key] = float(values.mean())
        result[f"per_image_{key}"] = values
    result["per_image_index"] = images
    if gold_loglik is not None:
        base = result.get("baseline_ll_bits", 0.0)
        if result["gold_ll_bits"] > base:
            result["ig_explained_pct"] = 100.0 * (result["ll_bits"] - base) / (result["gold_ll_bits"] - base)
    return result


# --- shuffled AUC without the centre bias (the paper's benchmark-style sAUC, Table 1) --------

SAUC_NO_CENTERBIAS = "sauc_no_centerbias"


def shuffled_auc_per_fixation(
    log_density_fn: LogDensityFn, fixations: Fixations, progress: bool = False, desc: str = "sAUC"
) -> np.ndarray:
    """(N,) shuffled AUC of each fixation under ``log_density_fn`` (image index -> (H_i, W_i) log density).

    The negatives of image i are the fixations on all other images, their relative
    coordinates mapped to image i's grid; ties count half; 0.5 when no other image has
    fixations. The same numbers as the ``sauc`` of `evaluate_log_densities`.
    """
    rows_all, cols_all = fixations.pixel_indices()
    negatives: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    out = np.full(len(fixations), 0.5)
    for i in tqdm(np.flatnonzero(fixations.counts_per_image() > 0), desc=desc, disable=not progress, unit="img"):
        idx = np.flatnonzero(fixations.n == i)
        size = (int(fixations.image_sizes[i, 0]), int(fixations.image_sizes[i, 1]))
        log_density = _image_log_density(log_density_fn, i, size)
        neg_rows, neg_cols = _negatives_of(negatives, fixations, size, i)
        if len(neg_rows):
            out[idx] = sauc_per_fixation(log_density, rows_all[idx], cols_all[idx], neg_rows, neg_cols)
    return out


def sauc_no_centerbias(log_density_no_centerbias_fn: LogDensityFn, fixations: Fixations, progress: bool = False) -> dict:
    """The paper's benchmark-style shuffled AUC: sAUC of the model's density *without* its centre bias.

    Table 1 of the paper scores sAUC on saliency maps without the centre bias: sAUC's
    negatives are other images' fixations, which carry the centre bias, so a density that
    includes it is penalised for it (the project's ``sauc`` scores the density with it).
    ``log_density_no_centerbias_fn`` maps image index i to the model's (H_i, W_i) log density
    computed with a uniform prior instead of the centre bias, e.g. from
    `deepgaze_jax.predict.predict_density_without_centerbias`.

    Returns ``sauc_no_centerbias`` (mean over fixations), ``sauc_no_centerbias_imgavg``
    (mean of per-image means) and ``per_image_sauc_no_centerbias`` ((I',) over the images
    with fixations, in index order), the key names `evaluate_log_densities` uses for ``sauc``.
    """
    if len(fixations) == 0:
        raise ValueError("sauc_no_centerbias needs fixations to score; the Fixations given are empty")
    values = shuffled_auc_per_fixation(log_density_no_centerbias_fn, fixations, progress, desc=SAUC_NO_CENTERBIAS)
    per_image = per_image_means(values, fixations.n)
    return {
        SAUC_NO_CENTERBIAS: float(values.mean()),
        f"{SAUC_NO_CENTERBIAS}_imgavg": float(per_image.mean()),
        f"per_image_{SAUC_NO_CENTERBIAS}": per_image,
    }
