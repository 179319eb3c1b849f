"""``deepgaze-jax evaluate``: scores a model or an ensemble on a dataset (`evaluate.evaluate_dataset`).

Reads any fixation format of `data.formats` (NUS ``.mat``, CSV/TSV, pysaliency HDF5),
prints the metrics of the model, the uniform model, the centre bias and the gold standard
as a table and writes the full report as JSON (and, with ``--per-image``, one CSV row per
image). Bad input (no fixations, a point outside its image, a missing image, a damaged
file) ends with one line ``deepgaze-jax evaluate: <message>`` on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from deepgaze_jax.atomic_file import write_atomic
from deepgaze_jax.evaluate import ImageModel, evaluate_dataset, per_image_table, require_fixations
from deepgaze_jax.model_options import add_model_arguments, models_from_args

PROG = "deepgaze-jax evaluate"
BASELINES_ONLY = "centerbias"  # the --model value that scores the baselines only
# Rows of the printed table, in order.
TABLE_KEYS = (
    "ll_bits",
    "ll_bits_imgavg",
    "ig_bits",
    "ig_explained_pct",
    "auc",
    "auc_judd",
    "sauc",
    "sauc_no_centerbias",
    "nss",
    "cc",
    "kl_nats",
    "sim",
)


def format_table(scores: dict[str, dict]) -> str:
    """The metrics (rows) of each model (columns) as aligned text; "-" where a metric does not apply."""
    names = list(scores)
    lines = [f"{'metric':<18}" + "".join(f"{n:>14}" for n in names)]
    for key in TABLE_KEYS:
        cells = [f"{scores[n][key]:>14.4f}" if key in scores[n] else f"{'-':>14}" for n in names]
        lines.append(f"{key:<18}" + "".join(cells))
    return "\n".join(lines)


def image_model(params) -> ImageModel:
    """A model or a list of models (an ensemble averaged in probability) as an `ImageModel`."""
    from deepgaze_jax.predict import predict_density

    return lambda image, prior: np.asarray(predict_density(params, image, centerbias=prior))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a model against centre bias and gold standard")
    p.add_argument(
        "--stimuli", type=Path, default=None,
        help="folder of the images the fixations name (.mat, .csv, .tsv); for pysaliency HDF5 the FileStimuli "
             "HDF5 file, or nothing when the fixations file holds the stimuli",
    )  # fmt: skip
    p.add_argument(
        "--fixations", type=Path, required=True,
        help="fixations: NUS fixations.mat, a CSV/TSV table image,x,y[,subject][,duration] or pysaliency HDF5",
    )  # fmt: skip
    add_model_arguments(p, also=f"; '{BASELINES_ONLY}' (the default) scores the baselines only")
    p.add_argument(
        "--centerbias", choices=("model", "fit"), default="model",
        help="the model's prior: its own centre bias (model, the default) or the dataset's own, fitted "
             "leave-one-image-out so that no image's prior has seen its fixations (fit)",
    )  # fmt: skip
    p.add_argument("--mode", choices=("paper", "aspect"), default="paper", help="working space (default: paper)")
    p.add_argument("--out", type=Path, required=True, help="JSON report to write")
    p.add_argument("--per-image", type=Path, default=None, help="also write one CSV row of metrics per image")
    p.add_argument("--save-centerbias", type=Path, default=None, help="also save the fitted centre bias (.npz)")
    p.add_argument("--drop-invalid", action="store_true", help="drop and count bad fixations instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def per_image_csv(report: dict) -> str:
    """`evaluate.per_image_table` of ``report`` as CSV text with a header row."""
    rows = per_image_table(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _chosen_models(args: argparse.Namespace):
    """The model(s) of ``--model`` as an `ImageModel`, or None for the baselines only (checks the combination)."""
    names = args.model or [BASELINES_ONLY]
    if BASELINES_ONLY in names:
        if len(names) > 1:
            raise ValueError(f"--model {BASELINES_ONLY} scores the baselines only; do not combine it with models")
        if args.centerbias == "fit":
            raise ValueError("--centerbias fit gives a model the dataset's centre bias; name the model with --model")
        return None
    return image_model(models_from_args(args))


def _evaluate(args: argparse.Namespace) -> int:
    from deepgaze_jax.data.formats import load_fixations

    dataset = load_fixations(args.fixations, args.stimuli, drop_invalid=args.drop_invalid)
    require_fixations(dataset)
    model = _chosen_models(args)
    report = evaluate_dataset(
        dataset, model, mode=args.mode, progress=not args.no_progress, centerbias_out=args.save_centerbias,
        centerbias=args.centerbias,
    )  # fmt: skip
    report["model"] = args.model or [BASELINES_ONLY]
    print(format_table(report["scores"]))
    write_atomic(args.out, json.dumps(report, indent=1, allow_nan=False))
    print(f"wrote {args.out}")
    if args.per_image is not None:
        write_atomic(args.per_image, per_image_csv(report))
        print(f"wrote {args.per_image} ({len(report['per_image']['image'])} images)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Runs the command; bad input ends with one line on stderr and exit status 1, not a traceback."""
    from deepgaze_jax.weights import WeightsError

    try:
        return _evaluate(args)
    except (ValueError, OSError, WeightsError) as exc:
        print(f"{PROG}: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 1
