"""``deepgaze-jax evaluate``: scores a model on a NUS-layout dataset (`evaluate.evaluate_dataset`).

Prints the metrics of the model, the uniform model, the centre bias and the gold standard
as a table and writes the full report as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deepgaze_jax.evaluate import ImageModel, evaluate_dataset

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
