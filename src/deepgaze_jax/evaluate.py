"""``deepgaze-jax evaluate``: a model beside the uniform model, the centre bias and the gold standard.

The dataset is mapped to its working space (paper mode: 512x384 / 384x512, section 2.3),
where the centre bias (leave-one-image-out, `centerbias`) and the gold standard
(leave-one-observer-out, `goldstandard`) are fitted and every model is scored with
`metrics.evaluate_log_densities`: log-likelihoods and information gains in bits per
fixation, information gain explained in %, AUC, Judd's AUC, shuffled AUC, NSS, CC, KL
(nats) and SIM. The gold standard has log-likelihood metrics only (it is a per-observer
density, not one map per image).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepgaze_jax.centerbias import fit_center_bias, leave_one_image_out, leave_one_image_out_maps
from deepgaze_jax.data.datasets import Dataset, Mode, working_sizes
from deepgaze_jax.goldstandard import fit_gold_standard, gold_standard_loglik
from deepgaze_jax.metrics import bits_over_uniform, evaluate_log_densities, per_image_means

# Rows of the printed table, in order.
TABLE_KEYS = (
    "ll_bits",
    "ll_bits_imgavg",
    "ig_bits",
    "ig_explained_pct",
    "auc",
    "auc_judd",
    "sauc",
    "nss",
    "cc",
    "kl_nats",
    "sim",
)

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
    if progress:
        print("fitting the centre bias (leave-one-image-out)...", file=sys.stderr)
    centerbias = fit_center_bias(fixations)
    if centerbias_out is not None:
        centerbias.save(centerbias_out)
    centerbias_loglik = leave_one_image_out(fixations, centerbias.bandwidth, centerbias.uniform_weight)
    if progress:
        print("fitting the gold standard (leave-one-observer-out)...", file=sys.stderr)
    gold_fit = fit_gold_standard(fixations, centerbias_loglik)
    gold_loglik = gold_standard_loglik(fixations, centerbias_loglik, gold_fit)

    baseline = leave_one_image_out_maps(fixations, centerbias.bandwidth, centerbias.uniform_weight)
    models: dict[str, Callable[[int], np.ndarray]] = {
        "uniform": lambda i: np.full(sizes[i], -np.log(float(np.prod(sizes[i]))), np.float32),
        "centerbias": baseline,
    }
    if model is not None:
        models["model"] = lambda i: model(dataset.load_image(i, tuple(int(s) for s in sizes[i])))

    scores: dict[str, dict] = {}
    per_image: dict[str, dict] = {}
    for name, log_density_fn in models.items():
        result = evaluate_log_densities(log_density_fn, fixations, baseline, gold_loglik, progress=progress, desc=name)
        scores[name] = {k: v for k, v in result.items() if not k.startswith("per_image_")}
        per_image[name] = {k[len("per_image_") :]: v.tolist() for k, v in result.items() if k.startswith("per_image_")}

    pixels = np.prod(sizes[fixations.n], axis=1)
    gold_bits = bits_over_uniform(gold_loglik, pixels)
    gold = {"ll_bits": gold_bits, "ig_bits": gold_bits - bits_over_uniform(centerbias_loglik, pixels)}
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


def format_table(scores: dict[str, dict]) -> str:
    """The metrics (rows) of each model (columns) as aligned text; "-" where a metric does not apply."""
    names = list(scores)
    lines = [f"{'metric':<18}" + "".join(f"{n:>14}" for n in names)]
    for key in TABLE_KEYS:
        cells = [f"{scores[n][key]:>14.4f}" if key in scores[n] else f"{'-':>14}" for n in names]
        lines.append(f"{key:<18}" + "".join(cells))
    return "\n".join(lines)


def load_image_model(spec: str) -> ImageModel:
    """A model file or "default" (the bundled model) as an `ImageModel` (imports JAX lazily)."""
    import deepgaze_jax

    params = deepgaze_jax.load_model(spec)
    return lambda image: np.asarray(deepgaze_jax.predict_density(params, image))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a model against centre bias and gold standard")
    p.add_argument("--stimuli", type=Path, required=True, help="folder of the images named in the fixations file")
    p.add_argument("--fixations", type=Path, required=True, help="NUS-layout fixations.mat")
    p.add_argument(
        "--model",
        default=None,
        help="model .npz, 'default' (bundled) or 'centerbias' (baselines only, the default)",
    )
    p.add_argument("--mode", choices=("paper", "aspect"), default="paper", help="working space (default: paper)")
    p.add_argument("--out", type=Path, required=True, help="JSON report to write")
    p.add_argument("--save-centerbias", type=Path, default=None, help="also save the fitted centre bias (.npz)")
    p.add_argument("--drop-invalid", action="store_true", help="drop fixations outside their image instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepgaze_jax.data.nus_mat import load_nus_mat

    dataset = load_nus_mat(args.stimuli, args.fixations, on_invalid="drop" if args.drop_invalid else "raise")
    model = None if args.model in (None, "centerbias") else load_image_model(args.model)
    report = evaluate_dataset(
        dataset, model, mode=args.mode, progress=not args.no_progress, centerbias_out=args.save_centerbias
    )
    report["model"] = args.model or "centerbias"
    print(format_table(report["scores"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, allow_nan=False))
    print(f"wrote {args.out}")
    return 0
