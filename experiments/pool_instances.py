"""Pools the readout instances of finished MIT1003 crossvalidations of one configuration into one run.

    python -m experiments.crossval_mit1003 --config lite0_taps_osie_eye_x3     # instances 0-2
    python -m experiments.crossval_mit1003 --config lite0_taps_osie_eye_x3b    # instances 3-5
    python -m experiments.pool_instances --config lite0_taps_osie_eye_x6       # the six, per fold
    python -m experiments.pool_instances runs/crossval_a runs/crossval_b --workdir runs/crossval_ab

Fold k of the pool is the mixture of the runs' fold-k models (`deepgaze_jax.instance_pool`): its
density is the average in probability of all their instances, each image still scored by the fold
that never saw it. Nothing is trained; the held-out and stopping-set predictions are recomputed
from the feature cache (the runs' ``--cache-dir``). Logs each fold's stopping-set NLL of the pooled
instances beside each run's (a training part, the criterion of `docs/pretrain_osie.md`), and writes
``<workdir>/report.json`` and ``report.md`` as `experiments.crossval_mit1003` does, and
``<workdir>/mixture.npz``, which `experiments.bundle_models` bundles like a trained run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from deepgaze_jax import crossvalidation, fit_cache
from deepgaze_jax.data import mit1003
from deepgaze_jax.dataset_training import fold_data, write_report
from deepgaze_jax.instance_pool import check_pool, pool_crossvalidations
from deepgaze_jax.model import ModelConfig
from experiments import configs

log = logging.getLogger("pool_instances").info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (`configs.parse_runs`): the runs, or ``--config`` a pool config naming them."""
    return configs.parse_runs(argv, __doc__, "a pool", Path("runs/pooled"))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    configs.start_process()
    started = time.time()
    missing = [str(run) for run in args.runs if not (run / "setup.json").is_file()]
    if missing:
        raise SystemExit(f"pool_instances: no finished run in {', '.join(missing)}: run their crossval_mit1003 "
                         "commands first (the pool config's docstring names them)")
    try:
        setup = check_pool(args.runs)
        config = ModelConfig.from_json(json.dumps(setup["model_config"]))
        dataset = mit1003.mit1003(args.data_dir)
        data, cache_s = fold_data(dataset, config, args.cache_dir, log=log)
        pool_crossvalidations(args.runs, args.workdir, data, log=log, setup=setup)
    except ValueError as exc:
        raise SystemExit(f"pool_instances: {exc}") from exc
    pooled = crossvalidation.read_setup(args.workdir)
    stopping = [json.loads((args.workdir / f"fold_{k}" / "history.json").read_text())["stopping_nll_bits"]
                for k in range(pooled["num_folds"])]
    log(f"{pooled['seeds']} instances per fold pooled from {len(args.runs)} runs into {args.workdir}: mean "
        f"stopping-set NLL {np.mean(stopping):.4f} bits/fix over {len(stopping)} folds")
    title = f"MIT1003 crossvalidation: {config.backbone}, {pooled['seeds']} instances per fold pooled from " + \
        " + ".join(str(run) for run in args.runs)
    command = {"pool_of": [str(r) for r in args.runs], "workdir": str(args.workdir), "cache_dir": str(args.cache_dir),
               "data_dir": None if args.data_dir is None else str(args.data_dir)}
    return write_report(
        args.workdir, dataset, data.fixations, config.cell, pooled["num_folds"], pooled["seed"], title,
        command=command, cache_s=cache_s, total_s=time.time() - started,
        fit_cache_dir=args.cache_dir / fit_cache.SUBDIR,
    )


if __name__ == "__main__":
    main()
