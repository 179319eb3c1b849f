"""The baselines every model is judged against, fitted once per dataset (paper section 2.4).

`fit_baselines` fits the centre bias (leave-one-image-out, `centerbias`) and, on top of
it, the gold standard (leave-one-observer-out, `goldstandard`), and evaluates both where
the metrics need them: the centre bias at every fixation and as one map per image (each
without the image it scores), the gold standard at every fixation. `evaluate` and the
crossvalidation report both score models against these.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from deepgaze_jax.centerbias import CenterBias, fit_center_bias, leave_one_image_out, leave_one_image_out_maps
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.goldstandard import GoldStandard, fit_gold_standard, gold_standard_loglik


@dataclasses.dataclass(frozen=True, eq=False)
class Baselines:
    """The fitted baselines of one set of fixations.

    Attributes:
      centerbias: the centre bias fitted on all fixations.
      centerbias_loglik: (N,) float64 leave-one-image-out centre bias at each fixation (nats per pixel).
      centerbias_maps: image index i -> (H_i, W_i) float32 centre-bias log density fitted without image i.
      gold: the fitted gold-standard hyperparameters.
      gold_loglik: (N,) float64 gold standard at each fixation (nats per pixel).
    """

    centerbias: CenterBias
    centerbias_loglik: np.ndarray
    centerbias_maps: Callable[[int], np.ndarray]
    gold: GoldStandard
    gold_loglik: np.ndarray


def fit_baselines(
    fixations: Fixations, log: Callable[[str], None] = lambda message: None, cache_dir: str | os.PathLike | None = None
) -> Baselines:
    """Fits the centre bias, then the gold standard, on ``fixations`` (working space); ``log`` hears each step;
    ``cache_dir`` keeps the fits (`fit_cache`)."""
    log("fitting the centre bias (leave-one-image-out)...")
    centerbias = fit_center_bias(fixations, cache_dir=cache_dir)
    centerbias_loglik = leave_one_image_out(fixations, centerbias.bandwidth, centerbias.uniform_weight)
    log("fitting the gold standard (leave-one-observer-out)...")
    gold = fit_gold_standard(fixations, centerbias_loglik, cache_dir=cache_dir)
    return Baselines(
        centerbias=centerbias,
        centerbias_loglik=centerbias_loglik,
        centerbias_maps=leave_one_image_out_maps(fixations, centerbias.bandwidth, centerbias.uniform_weight),
        gold=gold,
        gold_loglik=gold_standard_loglik(fixations, centerbias_loglik, gold),
    )
