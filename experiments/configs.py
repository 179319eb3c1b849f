"""Configurations and command-line options shared by the experiments."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import jax

from deepgaze_jax.backbones import BACKBONES
from deepgaze_jax.model import ModelConfig
from deepgaze_jax.readout import LINEAR_FEATURES, PAPER_FEATURES
from deepgaze_jax.training import TrainConfig

READOUTS = {"paper": PAPER_FEATURES, "linear": LINEAR_FEATURES}
DEFAULT_CACHE_DIR = Path("cache/features")


def model_config(backbone: str = "efficientnet_lite0", readout: str = "paper") -> ModelConfig:
    """The paper's model on ``backbone`` with the paper's (16-32-2-1) or a linear (DeepGaze I) readout."""
    return ModelConfig(backbone=backbone, readout_features=READOUTS[readout])


def add_model_and_training_args(parser: argparse.ArgumentParser) -> None:
    """--backbone, --readout, --optimizer, --max-epochs, --seed, --cache-dir, --batch-size, --learning-rate."""
    parser.add_argument("--backbone", default="efficientnet_lite0", help=f"one of {', '.join(BACKBONES)}")
    parser.add_argument("--readout", default="paper", choices=sorted(READOUTS), help="paper 16-32-2-1 or linear (DeepGaze I)")
    parser.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "adam"))
    parser.add_argument("--max-epochs", type=int, default=TrainConfig.max_epochs)
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate, help="Adam only")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="Adam only: images per step")
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="L2 on readout weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="feature cache directory")
    parser.add_argument(
        "--distributed", action="store_true",
        help="multi-host: call jax.distributed.initialize() first (run the same command on every host)",
    )


def start(args: argparse.Namespace) -> None:
    """Logging, and on ``--distributed`` the multi-host runtime (before any other JAX call)."""
    if args.distributed:
        jax.distributed.initialize()
    setup_logging()


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        optimizer=args.optimizer,
        max_epochs=args.max_epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )


def setup_logging() -> None:
    """INFO lines with timestamps on stdout (``force``: an imported library may have configured logging)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True)
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_crossval_report(
    workdir: Path, dataset, fixations, cell: int, num_folds: int, seed: int, title: str, **extra
) -> dict:
    """Scores ``workdir``'s held-out predictions, draws the figures, writes ``report.json`` / ``report.md``.

    ``dataset`` is the MIT1003 `datasets` object, ``fixations`` in its working space;
    ``extra`` (the command, timings) is stored in the report as given.
    """
    from deepgaze_jax import report as reports
    from deepgaze_jax.data import datasets

    report = reports.crossval_report(workdir, fixations, dataset.image_sizes, cell, num_folds, seed)
    report.update(extra)
    sizes = datasets.working_sizes(dataset.image_sizes, mode="paper")
    report["figures"] = reports.write_figures(
        workdir, report, lambda i: dataset.load_image(i, size=tuple(sizes[i])), fixations, cell
    )
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    (workdir / "report.md").write_text(reports.report_markdown(report, title))
    overall = report["overall"]
    logging.getLogger("experiments").info(
        f"held-out: LL {overall['ll_bits']:.3f} bits/fix, IG {overall['ig_bits']:.3f} bits/fix, "
        f"IG explained {overall['ig_explained_pct']:.1f}%, AUC {overall['auc']:.4f}, sAUC {overall['sauc']:.4f}; "
        f"report in {workdir / 'report.md'}"
    )
    return report
