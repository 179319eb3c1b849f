"""The gold standard: crossvalidated empirical saliency maps (paper section 2.4).

For each image and each observer, the fixations of the *other* observers on that image are
blurred by a Gaussian KDE and mixed with the centre bias and a uniform density:

    p(x) = a KDE_others(x) + b centrebias(x) + c / (H W),   a + b + c = 1,

with the bandwidth (a fraction of the image's longer side, isotropic in pixels) and the
weights (a, b, c) shared across images and fitted by maximum likelihood over the dataset.
Its log-likelihood is the explainable information (how well the fixations can be predicted
from other observers' fixations on the same image).

The KDE is `deepgaze_jax.kde.kde_grid` on the image's pixel grid, evaluated only where it
is needed: at fixation f, ``sum_g K(f, g)`` over the image's fixations g minus the sum over
g of f's own observer (all minus own, vectorised over observers), divided by the number of
other observers' fixations: exactly the blurred histogram of the others at f's pixel, without
building any grid (an n x n kernel matrix per image, n ~ 100 on MIT1003).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import logsumexp

from deepgaze_jax.centerbias import fit_bandwidth, images_by_size, uniform_log_density
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import safe_log
from deepgaze_jax.kde import blur_matrix, kernel_pairs


@dataclasses.dataclass(frozen=True)
class GoldStandard:
    """Fitted gold-standard hyperparameters.

    Attributes:
      bandwidth: Gaussian std as a fraction of the image's longer side.
      kde_weight, centerbias_weight, uniform_weight: mixing weights, summing to 1.
      mean_loglik_nats: the fitted mean log-likelihood per fixation (nats per pixel).
    """

    bandwidth: float
    kde_weight: float
    centerbias_weight: float
    uniform_weight: float
    mean_loglik_nats: float


def other_observers_kde(fixations: Fixations, bandwidth: float) -> np.ndarray:
    """(N,) KDE probability at each fixation's pixel of the other observers' fixations on its image.

    ``bandwidth`` is a fraction of the longer image side. Fixations with unknown observer
    (subject -1) leave out only themselves. 0 where no other observer fixated the image.
    """
    rows_all, cols_all = fixations.pixel_indices()
    out = np.zeros(len(fixations))
    for (h, w), images in images_by_size(fixations).items():
        sigma = bandwidth * max(h, w)
        k_rows, k_cols = blur_matrix(h, sigma), blur_matrix(w, sigma)
        for idx in images:
            rows, cols, subject = rows_all[idx], cols_all[idx], fixations.subject[idx]
            kernel = kernel_pairs(k_rows, k_cols, rows, cols, rows, cols)
            own = (subject[:, None] == subject[None, :]) & (subject[:, None] >= 0) | np.eye(len(idx), dtype=bool)
            others = len(idx) - own.sum(axis=1)
            kde = (kernel.sum(axis=1) - (kernel * own).sum(axis=1)) / np.maximum(others, 1)
            out[idx] = np.where(others > 0, np.maximum(kde, 0.0), 0.0)
    return out


def _log_components(fixations: Fixations, centerbias_loglik: np.ndarray, bandwidth: float) -> np.ndarray:
    """(N, 3) log densities (nats per pixel) of the KDE, centre bias and uniform components."""
    return np.stack(
        [safe_log(other_observers_kde(fixations, bandwidth)), centerbias_loglik, uniform_log_density(fixations)], axis=1
    )


def gold_standard_loglik(fixations: Fixations, centerbias_loglik: np.ndarray, gold: GoldStandard) -> np.ndarray:
    """(N,) float64 log density (nats per pixel) of each fixation under the gold standard.

    ``centerbias_loglik``: (N,) the centre bias at each fixation, nats per pixel (use the
    leave-one-image-out values, `deepgaze_jax.centerbias.leave_one_image_out`).
    """
    weights = np.array([gold.kde_weight, gold.centerbias_weight, gold.uniform_weight])
    return logsumexp(_log_components(fixations, centerbias_loglik, gold.bandwidth) + safe_log(weights), axis=1)


def fit_gold_standard(
    fixations: Fixations, centerbias_loglik: np.ndarray, bandwidth_bounds: tuple[float, float] = (0.002, 0.2)
) -> GoldStandard:
    """Bandwidth and mixing weights maximising the gold standard's likelihood over the dataset."""
    centerbias_loglik = np.asarray(centerbias_loglik, dtype=np.float64)
    bandwidth, weights, mean_ll = fit_bandwidth(
        lambda b: _log_components(fixations, centerbias_loglik, b), bandwidth_bounds
    )
    return GoldStandard(bandwidth, *(float(w) for w in weights), mean_loglik_nats=mean_ll)
