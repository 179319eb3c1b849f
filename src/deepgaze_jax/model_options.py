"""The ``--model`` option shared by the commands that run a model (predict, export, evaluate)."""

from __future__ import annotations

import argparse


def model_help() -> str:
    """What ``--model`` accepts: a file, or the bundled names (`model.BUNDLED_MODELS`, `model.DEFAULT_MODEL`)."""
    from deepgaze_jax.model import BUNDLED_MODELS, DEFAULT_MODEL, ENSEMBLE_SEPARATOR

    return (
        f"model .npz or bundled name: default (= {DEFAULT_MODEL}), {', '.join(BUNDLED_MODELS)} (single models; "
        f"lite0 is the fastest), or names joined by {ENSEMBLE_SEPARATOR} for their ensemble"
    )


def add_model_arguments(parser: argparse.ArgumentParser, also: str = "") -> None:
    """``--model`` (repeatable: an ensemble averaged in probability) on ``parser``; ``also`` extends its help."""
    parser.add_argument(
        "--model", action="append", default=None,
        help=model_help() + "; repeat it for an ensemble averaged in probability" + also,
    )


def models_from_args(args: argparse.Namespace):
    """The model of ``args.model`` (default: the bundled default): one `DeepGazeParams`, or an `Ensemble` of
    all the models named (an ensemble named among them contributes its members)."""
    from deepgaze_jax.model import ensemble, load_model

    return ensemble([load_model(name) for name in args.model or ["default"]])
