"""A model beside the uniform model, the centre bias and the gold standard.

The dataset is mapped to its working space (paper mode: 512x384 / 384x512, section 2.3),
where the centre bias (leave-one-image-out, `centerbias`) and the gold standard
(leave-one-observer-out, `goldstandard`) are fitted and every model is scored with
`metrics.evaluate_log_densities`: log-likelihoods and information gains in bits per
fixation, information gain explained in %, AUC, Judd's AUC, shuffled AUC, NSS, CC, KL
(nats) and SIM. The gold standard has log-likelihood metrics only (it is a per-observer
density, not one map per image). The command line is `evaluate_cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepgaze_jax.baselines import fit_baselines
from deepgaze_jax.data.datasets import Dataset, Mode, working_sizes
from deepgaze_jax.metrics import bits_over_uniform, evaluate_log_densities, per_image_means

ImageModel = Callable[[np.ndarray], np.ndarray]  # (h, w, 3) uint8 working image -> (h, w) log density


def evaluate_dataset(
    dataset: Dataset,
    model: ImageModel | None = None,
    mode: Mode = "paper",
    progress: bool = True,
    centerbias_out: str | Path | None = None,
) -> dict:
    """Scores ``model`` (if given), uniform, the centre bias and the gold standard on ``dataset``.

    Args:
      dataset: images and fixations in original coordinates.
      model: working-size (h, w, 3) uint8 image -> (h, w) log density (nats, logsumexp 0).
      mode: working space, "paper" (512x384 / 384x512) or "aspect".
      centerbias_out: where to save the centre bias fitted on all fixations (``.npz``).

    Returns a JSON-ready dict: ``scores`` {column: flat metrics with unit-suffixed keys},
    ``per_image`` {column: {metric: list}} with ``image`` names, and the fitted
    hyperparameters ``centerbias_fit`` and ``goldstandard_fit``.
    """
    sizes = working_sizes(dataset.image_sizes, mode)
    fixations = dataset.fixations.rescaled(sizes)
    log = (lambda message: print(message, file=sys.stderr)) if progress else (lambda message: None)
    baselines = fit_baselines(fixations, log)
    centerbias, gold_fit, baseline = baselines.centerbias, baselines.gold, baselines.centerbias_maps
    if centerbias_out is not None:
        centerbias.save(centerbias_out)
    models: dict[str, Callable[[int], np.ndarray]] = {
        "uniform": lambda i: np.full(sizes[i], -np.log(float(np.prod(sizes[i]))), np.float32),
        "centerbias": baseline,
    }
    if model is not None:
        models["model"] = lambda i: model(dataset.load_image(i, tuple(int(s) for s in sizes[i])))

    scores: dict[str, dict] = {}
    per_image: dict[str, dict] = {}
    for name, log_density_fn in models.items():
        result = evaluate_log_densities(
            log_density_fn, fixations, baseline, baselines.gold_loglik, progress=progress, desc=name
        )
        scores[name] = {k: v for k, v in result.items() if not k.startswith("per_image_")}
        per_image[name] = {k[len("per_image_") :]: v.tolist() for k, v in result.items() if k.startswith("per_image_")}

    pixels = np.prod(sizes[fixations.n], axis=1)
    gold_bits = bits_over_uniform(baselines.gold_loglik, pixels)
    gold = {"ll_bits": gold_bits, "ig_bits": gold_bits - bits_over_uniform(baselines.centerbias_loglik, pixels)}
    scores["goldstandard"] = {"ig_explained_pct": 100.0}
    per_image["goldstandard"] = {}
    for key, values in gold.items():
        means = per_image_means(values, fixations.n)
        scores["goldstandard"].update({key: float(values.mean()), f"{key}_imgavg": float(means.mean())})
        per_image["goldstandard"][key] = means.tolist()
    images = scores["uniform"]["num_images"]
    return {
        "dataset": dataset.name,
        "mode": mode,
        "num_images": images,
        "num_fixations": len(fixations),
        "centerbias_fit": {
            "bandwidth_rel": centerbias.bandwidth,
            "uniform_weight": centerbias.uniform_weight,
        },
        "goldstandard_fit": {
            "bandwidth_rel_long_side": gold_fit.bandwidth,
            "kde_weight": gold_fit.kde_weight,
            "centerbias_weight": gold_fit.centerbias_weight,
            "uniform_weight": gold_fit.uniform_weight,
        },
        "scores": {k: scores[k] for k in ("uniform", "centerbias", "goldstandard", "model") if k in scores},
        "per_image": {
            "image": [dataset.stimulus_names[i] for i in per_image["uniform"]["index"]],
            **{name: {k: v for k, v in columns.items() if k != "index"} for name, columns in per_image.items()},
        },
    }
