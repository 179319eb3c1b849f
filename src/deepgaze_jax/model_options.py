"""The ``--model`` option shared by the commands that run a model (predict, export, evaluate)."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser, also: str = "") -> None:
    """``--model`` (repeatable: an ensemble averaged in probability) on ``parser``; ``also`` extends its help."""
    parser.add_argument(
        "--model", action="append", default=None,
        help="model .npz or bundled name (lite0 = default, lite2); repeat it for an ensemble averaged in probability"
        + also,
    )


def models_from_args(args: argparse.Namespace):
    """One model (`DeepGazeParams`), or a list of them for an ensemble, from ``args.model``."""
    from deepgaze_jax.model import load_model

    models = [load_model(name) for name in args.model or ["default"]]
    return models[0] if len(models) == 1 else models
