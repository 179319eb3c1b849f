"""A model beside the uniform model, the centre bias and the gold standard.

The dataset is mapped to its working space (paper mode: 512x384 / 384x512, section 2.3),
where the centre bias (leave-one-image-out, `centerbias`) and the gold standard
(leave-one-observer-out, `goldstandard`) are fitted and every model is scored with
`metrics.evaluate_log_densities`: log-likelihoods and information gains in bits per
fixation, information gain explained in %, AUC, Judd's AUC, shuffled AUC, NSS, CC, KL
(nats) and SIM. The model also gets the paper's benchmark-style shuffled AUC, of its
density with a uniform prior in place of the centre bias (`metrics.sauc_no_centerbias`).
The gold standard has log-likelihood metrics only (it is a per-observer density, not one
map per image). The command line is `evaluate_cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Union

import numpy as np

from deepgaze_jax.baselines import Baselines, fit_baselines
from deepgaze_jax.data.datasets import Dataset, Mode, working_sizes
from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.metrics import SAUC_NO_CENTERBIAS, bits_over_uniform, evaluate_log_densities, per_image_means
from deepgaze_jax.metrics import sauc_no_centerbias

Prior = Union[None, str, np.ndarray]  # None: the model's own centre bias; "uniform"; or an (H, W) log density (nats)
# (h, w, 3) uint8 working image, prior -> (h, w) log density (nats, logsumexp 0), as `predict.predict_density`.
ImageModel = Callable[[np.ndarray, Prior], np.ndarray]
CenterBiasSource = Literal["model", "fit"]
# Per-image metrics of `per_image_table`, in column order (those a column lacks are left out).
PER_IMAGE_KEYS = ("ll_bits", "ig_bits", "auc", "sauc", SAUC_NO_CENTERBIAS, "nss", "auc_judd", "cc", "kl_nats", "sim")


class NoFixationsError(ValueError):
    """A dataset without a single fixation: there is nothing to score."""


def require_fixations(dataset: Dataset) -> None:
    """Raises `NoFixationsError` when ``dataset`` holds no fixation (before any work is done on it)."""
    if len(dataset.fixations) == 0:
        raise NoFixationsError(
            f"{dataset.name} holds no fixations on its {len(dataset)} image(s), so there is nothing to evaluate; "
            "check the fixations file (with --drop-invalid, every fixation in it was invalid)"
        )


def _model_priors(centerbias: CenterBiasSource, baselines: Baselines) -> Callable[[int], Prior]:
    """image index -> the prior the model gets: its own (None) or the dataset's, fitted without that image."""
    return baselines.centerbias_maps if centerbias == "fit" else lambda i: None


def _score(name: str, log_density_fn, fixations: Fixations, baselines: Baselines, progress: bool) -> tuple[dict, dict]:
    """(scalar scores, per-image lists) of one column, by `evaluate_log_densities`."""
    result = evaluate_log_densities(
        log_density_fn, fixations, baselines.centerbias_maps, baselines.gold_loglik, progress=progress, desc=name
    )
    scores = {k: v for k, v in result.items() if not k.startswith("per_image_")}
    per_image = {k[len("per_image_") :]: v.tolist() for k, v in result.items() if k.startswith("per_image_")}
    return scores, per_image


def _score_goldstandard(fixations: Fixations, baselines: Baselines, sizes: np.ndarray) -> tuple[dict, dict]:
    """(scalar scores, per-image lists) of the gold standard: LL and IG (bits per fixation) only."""
    pixels = np.prod(sizes[fixations.n], axis=1)
    gold_bits = bits_over_uniform(baselines.gold_loglik, pixels)
    gold = {"ll_bits": gold_bits, "ig_bits": gold_bits - bits_over_uniform(baselines.centerbias_loglik, pixels)}
    scores, per_image = {"ig_explained_pct": 100.0}, {}
    for key, values in gold.items():
        means = per_image_means(values, fixations.n)
        scores.update({key: float(values.mean()), f"{key}_imgavg": float(means.mean())})
        per_image[key] = means.tolist()
    return scores, per_image


def evaluate_dataset(
    dataset: Dataset,
    model: ImageModel | None = None,
    mode: Mode = "paper",
    progress: bool = True,
    centerbias_out: str | Path | None = None,
    centerbias: CenterBiasSource = "model",
) -> dict:
    """Scores ``model`` (if given), uniform, the centre bias and the gold standard on ``dataset``.

    Args:
      dataset: images and fixations in original coordinates (at least one fixation).
      model: `ImageModel`: working-size (h, w, 3) uint8 image and prior -> (h, w) log density.
      mode: working space, "paper" (512x384 / 384x512) or "aspect".
      centerbias_out: where to save the centre bias fitted on all fixations (``.npz``).
      centerbias: the model's prior: "model" (its own, e.g. the bundled one) or "fit" (the
        dataset's centre bias, for image i the leave-one-image-out map that never saw image
        i's fixations; its bandwidth and uniform weight are fitted on all images, as for the
        centre-bias baseline). The model's ``sauc_no_centerbias`` uses the prior "uniform".

    Returns a JSON-ready dict: ``scores`` {column: flat metrics with unit-suffixed keys},
    ``per_image`` {column: {metric: list}} with ``image`` names and ``num_fixations``, over the
    images with fixations, and the fitted hyperparameters ``centerbias_fit`` and
    ``goldstandard_fit``. Raises `NoFixationsError` for a dataset without fixations.
    """
    require_fixations(dataset)
    if centerbias not in ("model", "fit"):
        raise ValueError(f"centerbias must be 'model' or 'fit', got {centerbias!r}")
    sizes = working_sizes(dataset.image_sizes, mode)
    fixations = dataset.fixations.rescaled(sizes)
    log = (lambda message: print(message, file=sys.stderr)) if progress else (lambda message: None)
    baselines = fit_baselines(fixations, log)
    priors = _model_priors(centerbias, baselines)
    if centerbias_out is not None:
        baselines.centerbias.save(centerbias_out)
    columns: dict[str, Callable[[int], np.ndarray]] = {
        "uniform": lambda i: np.full(sizes[i], -np.log(float(np.prod(sizes[i]))), np.float32),
        "centerbias": baselines.centerbias_maps,
    }

    def image(i: int) -> np.ndarray:
        return dataset.load_image(i, tuple(int(s) for s in sizes[i]))

    if model is not None:
        columns["model"] = lambda i: model(image(i), priors(i))

    scores, per_image = {}, {}
    for name, log_density_fn in columns.items():
        scores[name], per_image[name] = _score(name, log_density_fn, fixations, baselines, progress)
    if model is not None:
        no_centerbias = sauc_no_centerbias(lambda i: model(image(i), "uniform"), fixations, progress)
        scores["model"].update({k: v for k, v in no_centerbias.items() if not k.startswith("per_image_")})
        per_image["model"][SAUC_NO_CENTERBIAS] = no_centerbias[f"per_image_{SAUC_NO_CENTERBIAS}"].tolist()
    scores["goldstandard"], per_image["goldstandard"] = _score_goldstandard(fixations, baselines, sizes)
    return _report(dataset, mode, fixations, baselines, scores, per_image, centerbias if model is not None else None)


def _report(dataset, mode, fixations, baselines, scores, per_image, model_centerbias) -> dict:
    """The JSON-ready report of `evaluate_dataset`."""
    index = per_image["uniform"]["index"]
    gold_fit, centerbias = baselines.gold, baselines.centerbias
    return {
        "dataset": dataset.name,
        "mode": mode,
        "num_images": scores["uniform"]["num_images"],
        "num_fixations": len(fixations),
        "model_centerbias": model_centerbias,
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
            "image": [dataset.stimulus_names[i] for i in index],
            "num_fixations": fixations.counts_per_image()[index].tolist(),
            **{name: {k: v for k, v in columns.items() if k != "index"} for name, columns in per_image.items()},
        },
    }


def per_image_table(report: dict) -> list[dict]:
    """One row per image with fixations, from an `evaluate_dataset` report.

    Each row has ``image``, ``num_fixations`` and ``<column>_<metric>`` for the model (if
    scored), the centre bias and the gold standard, metrics in `PER_IMAGE_KEYS` order: LL and
    IG in bits per fixation (means over the image's fixations), AUC, sAUC, ..., KL in nats.
    """
    per_image = report["per_image"]
    columns = [
        (f"{name}_{key}", per_image[name][key])
        for name in ("model", "centerbias", "goldstandard")
        if name in per_image
        for key in PER_IMAGE_KEYS
        if key in per_image[name]
    ]
    return [
        {"image": image, "num_fixations": count, **{column: values[k] for column, values in columns}}
        for k, (image, count) in enumerate(zip(per_image["image"], per_image["num_fixations"]))
    ]
