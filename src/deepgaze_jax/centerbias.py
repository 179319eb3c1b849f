"""The centre bias: the paper's image-independent baseline (section 2.4).

A Gaussian KDE of fixations in relative coordinates (x / W, y / H), mixed with a uniform
density: ``p(x) = (1 - u) KDE(x) + u / (H W)`` per pixel. The KDE is evaluated on the pixel
grid of the image being predicted (relative coordinates binned to its pixels, blurred with
std ``bandwidth * H`` rows and ``bandwidth * W`` columns, reflecting boundaries; see
`deepgaze_jax.kde.kde_grid`), so its grid resolution is the image's own: 512x384 in the
paper's evaluation space, 256x256 for the shipped `CenterBias.template`.

The bandwidth and the uniform weight ``u`` are fitted by maximum likelihood, crossvalidated
leave-one-image-out: each fixation is scored under the KDE of the fixations on all *other*
images (`leave_one_image_out`). The two hyperparameters are shared across images (fitted on all
fixations, as pysaliency's crossvalidated baseline does); the KDE itself never sees the image
it scores.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import scipy.optimize
from scipy.special import logsumexp

from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.densities import log_normalize, safe_log
from deepgaze_jax.fit_cache import cached_fit, fixation_arrays
from deepgaze_jax.kde import ImagePairs, image_pairs, kde_grid, relative_cells


def mixture_log_density(kde: np.ndarray, uniform_weight: float) -> np.ndarray:
    """log((1 - u) kde + u / (H W)) for an (H, W) KDE summing to 1: normalised float32 log density."""
    mixed = (1.0 - uniform_weight) * np.maximum(kde, 0.0) + uniform_weight / kde.size
    return log_normalize(safe_log(mixed)).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class CenterBias:
    """A fitted centre bias.

    Attributes:
      x, y: (N,) float32 relative fixation coordinates in [0, 1) (x / W, y / H).
      bandwidth: Gaussian std in relative units (fraction of the width along x, of the height
        along y).
      uniform_weight: mixing weight u of the uniform component, in (0, 1).
    """

    x: np.ndarray
    y: np.ndarray
    bandwidth: float
    uniform_weight: float

    def log_density(self, height: int, width: int) -> np.ndarray:
        """(height, width) float32 log density per pixel (nats, logsumexp 0)."""
        kde = kde_grid(
            relative_cells(self.y, height),
            relative_cells(self.x, width),
            (height, width),
            self.bandwidth * height,
            self.bandwidth * width,
        )
        return mixture_log_density(kde, self.uniform_weight)

    def template(self, size: tuple[int, int] = (256, 256)) -> np.ndarray:
        """``size`` float32 log density over the unit square, for shipping.

        Use it for any image with `densities.resize_log_density(template, (H, W))`.
        """
        return self.log_density(*size)

    def save(self, path: str | os.PathLike) -> None:
        """Writes ``x``, ``y``, ``bandwidth``, ``uniform_weight`` to an ``.npz`` file."""
        np.savez_compressed(path, x=self.x, y=self.y, bandwidth=self.bandwidth, uniform_weight=self.uniform_weight)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CenterBias":
        with np.load(path) as data:
            return cls(
                x=data["x"].astype(np.float32),
                y=data["y"].astype(np.float32),
                bandwidth=float(data["bandwidth"]),
                uniform_weight=float(data["uniform_weight"]),
            )


# --- maximum-likelihood fitting (shared with the gold standard) --------------------------------


def fit_mixture_weights(log_components: np.ndarray) -> tuple[np.ndarray, float]:
    """Maximum-likelihood weights of a mixture with fixed components.

    Args:
      log_components: (N, K) log density of each sample under each component (nats).
    Returns:
      (K,) weights on the simplex and the mean log-likelihood per sample (nats).
    """
    log_components = np.asarray(log_components, dtype=np.float64)
    row_max = log_components.max(axis=1)
    scaled = np.exp(log_components - row_max[:, None])  # (N, K) in [0, 1], each row's max is 1

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        weights = np.exp(z - logsumexp(z))
        mixture = scaled @ weights
        responsibility = (scaled / mixture[:, None]).mean(axis=0) * weights
        return -float(np.log(mixture).mean() + row_max.mean()), weights - responsibility

    k = log_components.shape[1]
    result = scipy.optimize.minimize(objective, np.zeros(k), jac=True, method="L-BFGS-B", bounds=[(-30, 30)] * k)
    return np.exp(result.x - logsumexp(result.x)), -float(result.fun)


def fit_bandwidth(
    log_components: Callable[[float], np.ndarray], bounds: tuple[float, float]
) -> tuple[float, np.ndarray, float]:
    """Maximum-likelihood KDE bandwidth and mixture weights.

    ``log_components(bandwidth)`` gives the (N, K) component log densities at a bandwidth;
    the mixture weights are fitted for each bandwidth (`fit_mixture_weights`) and the
    bandwidth by bounded scalar minimisation over its logarithm.
    Returns (bandwidth, (K,) weights, mean log-likelihood in nats per sample).
    """
    fits: dict[float, tuple[np.ndarray, float]] = {}

    def negative_ll(log_bandwidth: float) -> float:
        fits[log_bandwidth] = fit_mixture_weights(log_components(float(np.exp(log_bandwidth))))
        return -fits[log_bandwidth][1]

    scipy.optimize.minimize_scalar(
        negative_ll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-3}
    )
    best = max(fits, key=lambda b: fits[b][1])
    return float(np.exp(best)), *fits[best]


# --- leave-one-image-out ----------------------------------------------------------------------


def images_by_size(fixations: Fixations) -> dict[tuple[int, int], list[np.ndarray]]:
    """{(H, W): [fixation indices of each image of that size that has fixations]}."""
    order = np.argsort(fixations.n, kind="stable")
    images, starts = np.unique(fixations.n[order], return_index=True)
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for image, idx in zip(images, np.split(order, starts[1:])):
        size = tuple(int(s) for s in fixations.image_sizes[image])
        groups.setdefault(size, []).append(idx)
    return groups


def own_image_pairs(fixations: Fixations) -> list[tuple[list[ImagePairs], np.ndarray, np.ndarray, np.ndarray]]:
    """Per image size (H, W): (the `kde.ImagePairs` chunks of the fixations of each image of that size,
    their fixation indices, the cell rows and columns of every fixation on that grid)."""
    rx, ry = fixations.relative()
    out = []
    for (h, w), images in images_by_size(fixations).items():
        rows, cols = relative_cells(ry, h), relative_cells(rx, w)
        out.append((image_pairs(images, rows, cols, (h, w)), np.concatenate(images), rows, cols))
    return out


def _loo_kde(fixations: Fixations, bandwidth: float, pairs=None) -> np.ndarray:
    """(N,) KDE probability, at each fixation's pixel, of the fixations on the other images.

    ``pairs``: `own_image_pairs` of ``fixations`` (computed when not given; pass it when
    evaluating many bandwidths).
    """
    pairs = own_image_pairs(fixations) if pairs is None else pairs
    out = np.zeros(len(fixations))
    for chunks, members, rows, cols in pairs:
        h, w = chunks[0].shape
        total = kde_grid(rows, cols, (h, w), bandwidth * h, bandwidth * w) * len(fixations)
        own = sum(p.sums(p.kernel(bandwidth * h, bandwidth * w), len(fixations)) for p in chunks)
        others = len(fixations) - np.bincount(fixations.n, minlength=fixations.num_images)[fixations.n[members]]
        out[members] = (total[rows[members], cols[members]] - own[members]) / np.maximum(others, 1)
    return np.maximum(out, 0.0)


def uniform_log_density(fixations: Fixations) -> np.ndarray:
    """(N,) log(1 / (H W)) of each fixation's image."""
    return -np.log(np.prod(fixations.image_sizes[fixations.n].astype(np.float64), axis=1))


def leave_one_image_out(fixations: Fixations, bandwidth: float, uniform_weight: float) -> np.ndarray:
    """(N,) float64 log density (nats per pixel) of each fixation under the centre bias of the other images."""
    return np.logaddexp(
        safe_log(1.0 - uniform_weight) + safe_log(_loo_kde(fixations, bandwidth)),
        safe_log(uniform_weight) + uniform_log_density(fixations),
    )


def leave_one_image_out_maps(fixations: Fixations, bandwidth: float, uniform_weight: float) -> Callable[[int], np.ndarray]:
    """image index i -> (H_i, W_i) float32 centre-bias log density fitted without image i.

    The same densities that `leave_one_image_out` evaluates at the fixations; for the
    map-based metrics (AUC, NSS, ...) of the centre bias.
    """
    rx, ry = fixations.relative()
    totals: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def log_density(i: int) -> np.ndarray:
        h, w = (int(s) for s in fixations.image_sizes[i])
        if (h, w) not in totals:
            rows, cols = relative_cells(ry, h), relative_cells(rx, w)
            totals[(h, w)] = (kde_grid(rows, cols, (h, w), bandwidth * h, bandwidth * w) * len(fixations), rows, cols)
        total, rows, cols = totals[(h, w)]
        own = np.flatnonzero(fixations.n == i)
        if len(own):
            total = total - kde_grid(rows[own], cols[own], (h, w), bandwidth * h, bandwidth * w) * len(own)
        return mixture_log_density(total / max(len(fixations) - len(own), 1), uniform_weight)

    return log_density


def fit_center_bias(
    fixations: Fixations, bandwidth_bounds: tuple[float, float] = (0.005, 0.5), cache_dir: str | os.PathLike | None = None
) -> CenterBias:
    """The centre bias of all ``fixations``, with the bandwidth (searched within ``bandwidth_bounds``,
    relative units) and uniform weight that maximise the leave-one-image-out likelihood.

    ``cache_dir``: where fits are kept (`fit_cache`): the same fixations and bounds are fitted once."""
    fit = cached_fit(cache_dir, "centerbias", lambda: _fit_center_bias_params(fixations, bandwidth_bounds),
                     fixation_arrays(fixations), {"bandwidth_bounds": list(bandwidth_bounds)})
    rx, ry = fixations.relative()
    return CenterBias(x=rx.astype(np.float32), y=ry.astype(np.float32), bandwidth=fit["bandwidth"],
                      uniform_weight=fit["uniform_weight"])


def _fit_center_bias_params(fixations: Fixations, bandwidth_bounds: tuple[float, float]) -> dict:
    uniform, pairs = uniform_log_density(fixations), own_image_pairs(fixations)
    bandwidth, weights, _ = fit_bandwidth(
        lambda b: np.stack([safe_log(_loo_kde(fixations, b, pairs)), uniform], axis=1), bandwidth_bounds
    )
    return {"bandwidth": bandwidth, "uniform_weight": float(weights[1])}
