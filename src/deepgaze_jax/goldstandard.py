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
import os

import numpy as np
from scipy.special import logsumexp

from deepgaze_jax.centerbias import fit_bandwidth, images_by_size, uniform_log_density
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import safe_log
from deepgaze_jax.fit_cache import cached_fit, fixation_arrays
from deepgaze_jax.kde import ImagePairs, image_pairs


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


@dataclasses.dataclass(frozen=True)
class ObserverPairs:
    """What `other_observers_kde` needs at every bandwidth, built once per fixation set.

    Attributes:
      chunks: per chunk of `kde.ImagePairs` of each image's fixations on its pixel grid, (the pairs,
        (P,) bool: the pair is of two different observers, i.e. b counts in a's KDE of the others).
      others: (N,) float64 number of other observers' fixations on each fixation's image.
    """

    chunks: list[tuple[ImagePairs, np.ndarray]]
    others: np.ndarray


def observer_pairs(fixations: Fixations) -> ObserverPairs:
    """The `ObserverPairs` of ``fixations``."""
    rows, cols = fixations.pixel_indices()
    subject = np.asarray(fixations.subject)
    chunks = []
    for (h, w), images in images_by_size(fixations).items():
        for pairs in image_pairs(images, rows, cols, (h, w)):
            same = ((subject[pairs.a] == subject[pairs.b]) & (subject[pairs.a] >= 0)) | (pairs.a == pairs.b)
            chunks.append((pairs, ~same))
    others = sum((p.sums(other.astype(np.float64), len(fixations)) for p, other in chunks), np.zeros(len(fixations)))
    return ObserverPairs(chunks, others)


def other_observers_kde(fixations: Fixations, bandwidth: float, pairs: ObserverPairs | None = None) -> np.ndarray:
    """(N,) KDE probability at each fixation's pixel of the other observers' fixations on its image.

    ``bandwidth`` is a fraction of the longer image side. Fixations with unknown observer
    (subject -1) leave out only themselves. 0 where no other observer fixated the image.
    ``pairs``: `observer_pairs` of ``fixations`` (computed when not given).
    """
    pairs = observer_pairs(fixations) if pairs is None else pairs
    kde = np.zeros(len(fixations))
    for image_pairs_, other in pairs.chunks:
        sigma = bandwidth * max(image_pairs_.shape)
        kde += image_pairs_.sums(image_pairs_.kernel(sigma, sigma) * other, len(fixations))
    return np.where(pairs.others > 0, np.maximum(kde / np.maximum(pairs.others, 1), 0.0), 0.0)


def _log_components(fixations: Fixations, centerbias_loglik: np.ndarray, bandwidth: float, pairs=None) -> np.ndarray:
    """(N, 3) log densities (nats per pixel) of the KDE, centre bias and uniform components."""
    return np.stack(
        [safe_log(other_observers_kde(fixations, bandwidth, pairs)), centerbias_loglik, uniform_log_density(fixations)],
        axis=1,
    )


def gold_standard_loglik(fixations: Fixations, centerbias_loglik: np.ndarray, gold: GoldStandard) -> np.ndarray:
    """(N,) float64 log density (nats per pixel) of each fixation under the gold standard.

    ``centerbias_loglik``: (N,) the centre bias at each fixation, nats per pixel (use the
    leave-one-image-out values, `deepgaze_jax.centerbias.leave_one_image_out`).
    """
    weights = np.array([gold.kde_weight, gold.centerbias_weight, gold.uniform_weight])
    return logsumexp(_log_components(fixations, centerbias_loglik, gold.bandwidth) + safe_log(weights), axis=1)


def fit_gold_standard(
    fixations: Fixations, centerbias_loglik: np.ndarray, bandwidth_bounds: tuple[float, float] = (0.002, 0.2),
    cache_dir: str | os.PathLike | None = None,
) -> GoldStandard:
    """Bandwidth and mixing weights maximising the gold standard's likelihood over the dataset.

    ``cache_dir``: where fits are kept (`fit_cache`): the same inputs and bounds are fitted once."""
    centerbias_loglik = np.asarray(centerbias_loglik, dtype=np.float64)

    def fit() -> dict:
        pairs = observer_pairs(fixations)
        bandwidth, weights, mean_ll = fit_bandwidth(
            lambda b: _log_components(fixations, centerbias_loglik, b, pairs), bandwidth_bounds
        )
        return dataclasses.asdict(GoldStandard(bandwidth, *(float(w) for w in weights), mean_loglik_nats=mean_ll))

    return GoldStandard(**cached_fit(cache_dir, "goldstandard", fit, (*fixation_arrays(fixations), centerbias_loglik),
                                     {"bandwidth_bounds": list(bandwidth_bounds)}))
