"""10-fold crossvalidation of the readout on MIT1003 (paper, section 2.4), resumable.

    python -m experiments.crossval_mit1003 --backbone efficientnet_lite0 --no-pretrain
    python -m experiments.crossval_mit1003 --init runs/pretrain_salicon/model.npz
    python -m experiments.crossval_mit1003 --backbone efficientnet_lite0 --no-pretrain --seeds 3

The folds (x ``--seeds`` readout instances) are trained one after the other;
``--at-once`` trains them all together in one vectorised program.

Writes ``<workdir>/report.json`` and ``report.md`` (held-out LL, IG over the
crossvalidated centre bias, IG explained, AUC, sAUC; per fold, overall and on the
paper's 463 images of 1024x768) and ``<workdir>/mixture.npz`` (the ten fold models
as one mixture). Re-running the same command skips finished folds and resumes the
current one from its last checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from deepgaze_jax import crossvalidation
from deepgaze_jax.data import datasets
from deepgaze_jax.feature_cache import cached_feature_grids
from deepgaze_jax.model import load_model
from experiments import configs

log = logging.getLogger("crossval_mit1003").info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configs.add_model_and_training_args(parser)
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--no-pretrain", action="store_true", help="start every fold from a random readout")
    start.add_argument("--init", type=Path, help="model .npz to start from (e.g. pretrained on SALICON)")
    parser.add_argument("--data-dir", type=Path, default=None, help="MIT1003 root (default: discovered)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/crossval"))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1, help="readout instances per fold (averaged in probability)")
    parser.add_argument("--at-once", action="store_true",
                        help="train all folds x seeds at once in one vectorised program (L-BFGS only; slower on AVX2 CPUs)")
    args = parser.parse_args(argv)
    configs.start(args)
    started = time.time()

    config = configs.model_config(args.backbone, args.readout)
    dataset = datasets.mit1003(args.data_dir)
    images, fixations = datasets.to_working_space(dataset, mode="paper")
    weights = config.get_backbone().load_weights()
    t = time.time()
    grids = cached_feature_grids(images, config, weights, args.cache_dir)
    cache_s = time.time() - t
    log(f"feature grids ready in {cache_s:.0f} s: {len(grids)} x {grids[0].shape} {grids[0].dtype}")
    del images
    init = None
    if args.init is not None:
        init = load_model(args.init, backbone_weights={})
        if init.config.backbone != config.backbone or init.config.readout_features != config.readout_features:
            parser.error(f"--init {args.init} is a {init.config.backbone} / {init.config.readout_features} model")

    crossvalidation.run_crossvalidation(
        crossvalidation.FoldData(grids, fixations), config, configs.train_config(args), args.workdir,
        num_folds=args.folds, seed=args.seed, init=init, log=log, seeds=args.seeds, at_once=args.at_once,
    )
    title = f"MIT1003 crossvalidation: {config.backbone}, {args.readout} readout, " + (
        "no pretraining" if args.no_pretrain else f"init {args.init}")
    command = vars(args) | {"workdir": str(args.workdir), "cache_dir": str(args.cache_dir),
                            "init": None if args.init is None else str(args.init),
                            "data_dir": None if args.data_dir is None else str(args.data_dir)}
    report = configs.write_crossval_report(
        args.workdir, dataset, fixations, config.cell, args.folds, args.seed, title,
        command=command, cache_s=cache_s, total_s=time.time() - started,
    )
    return report


if __name__ == "__main__":
    main()
