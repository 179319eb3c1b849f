"""An ensemble of finished MIT1003 crossvalidation runs, scored on the held-out images.

    python -m experiments.crossval_mit1003 --backbone efficientnet_lite0 --no-pretrain --workdir runs/crossval
    python -m experiments.crossval_mit1003 --backbone efficientnet_lite2 --no-pretrain --workdir runs/crossval_lite2
    python -m experiments.ensemble_mit1003 runs/crossval runs/crossval_lite2 --workdir runs/ensemble
    python -m experiments.ensemble_mit1003 --config ensemble     # the same, from experiments/configs/ensemble.py

Each image's held-out density is the average, in probability, of the runs' held-out
densities for it (as DeepGaze IIE averages backbones), so the ensemble is crossvalidated
too. Writes ``<workdir>/report.json`` and ``report.md`` as `experiments.crossval_mit1003`
does. For new images, pass the runs' models as a list: ``predict_density([m0, m2], img)``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from deepgaze_jax import crossvalidation, fit_cache
from deepgaze_jax.dataset_training import write_report
from deepgaze_jax.data import datasets, mit1003
from experiments import configs

log = logging.getLogger("ensemble_mit1003").info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (`configs.parse_runs`): the runs, or ``--config`` an ensemble config naming them."""
    return configs.parse_runs(argv, __doc__, "an ensemble", Path("runs/ensemble"))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    configs.start_process()
    started = time.time()

    setup = crossvalidation.ensemble_crossvalidation(args.runs, args.workdir)
    backbones = [c["backbone"] for c in setup["model_configs"]]
    log(f"ensemble of {len(args.runs)} runs ({', '.join(backbones)}) written to {args.workdir}")
    dataset = mit1003.mit1003(args.data_dir)
    fixations = dataset.fixations.rescaled(datasets.working_sizes(dataset.image_sizes, mode="paper"))
    cell = setup["model_configs"][0]["cell"]
    command = {"runs": [str(r) for r in args.runs], "workdir": str(args.workdir),
               "data_dir": None if args.data_dir is None else str(args.data_dir)}
    return write_report(
        args.workdir, dataset, fixations, cell, setup["num_folds"], setup["seed"],
        f"MIT1003 crossvalidation: ensemble of {' + '.join(backbones)}", command=command, total_s=time.time() - started,
        fit_cache_dir=args.cache_dir / fit_cache.SUBDIR,
    )


if __name__ == "__main__":
    main()
