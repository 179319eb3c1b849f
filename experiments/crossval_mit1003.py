"""10-fold crossvalidation of the readout on MIT1003 (paper, section 2.4), resumable.

    python -m experiments.crossval_mit1003 --config lite0        # = --backbone efficientnet_lite0 --no-pretrain
    python -m experiments.crossval_mit1003 --init runs/pretrain_salicon/model.npz
    python -m experiments.crossval_mit1003 --backbone efficientnet_lite0 --no-pretrain --seeds 3

The folds (x ``--seeds`` readout instances) are trained all together in one vectorised
program (`batched_training`) where the optimiser allows it (L-BFGS with the Wolfe line
search, the default), else, or with ``--fold-by-fold``, one after the other. ``--stopping inner``
(the default for a new workdir) stops fold k on part k + 1 of its training parts, never on
the scored part k; ``--stopping heldout`` is the old protocol (stop on part k), for the
figures published with it. A workdir resumes with the choice recorded in its setup.json.

Writes ``<workdir>/report.json`` and ``report.md`` (held-out LL, IG over the
crossvalidated centre bias, IG explained, AUC, sAUC with and without centre bias; per fold, overall and on the
paper's 463 images of 1024x768) and ``<workdir>/mixture.npz`` (the ten fold models
as one mixture). Re-running the same command skips finished folds and resumes the
current one from its last checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from deepgaze_jax import batched_training
from deepgaze_jax.data import mit1003
from deepgaze_jax.dataset_training import crossvalidate_dataset, load_init
from experiments import configs

log = logging.getLogger("crossval_mit1003").info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``--config`` applied (`configs.parse_args`) and the start and workdir resolved."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configs.add_model_and_training_args(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--no-pretrain", action="store_true",
                       help="random readout per fold (the default of --config, unless the config names an init)")
    start.add_argument("--init", type=Path, nargs="+",
                       help="model .npz to start from (e.g. pretrained on SALICON), or one per readout instance "
                            "(--seeds of them, e.g. pretrainings with different --init-seed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="MIT1003 root (default: discovered)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: the config's, else runs/crossval")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1, help="readout instances per fold (averaged in probability)")
    parser.add_argument("--fold-by-fold", action="store_true",
                        help="train the folds one after the other (default: all folds x seeds at once in one vectorised "
                             "program, wherever the optimiser allows: L-BFGS with the Wolfe line search)")
    configs.add_stopping_arg(parser)
    args = configs.parse_args(parser, argv)
    if args.config is None and not (args.no_pretrain or args.init):
        parser.error("one of --no-pretrain, --init or --config is required")
    args.init = configs.init_paths(args.init)
    if args.no_pretrain:  # an explicit --no-pretrain wins over a config's init
        args.init = None
    args.no_pretrain = args.init is None
    if args.workdir is None:
        args.workdir = configs.get(args.config).workdir if args.config else Path("runs/crossval")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    configs.start(args)
    config = configs.model_config_of(args)
    try:
        configs.check_init(args.init, args.config)
        init = None if args.init is None else [load_init(path, config) for path in args.init]
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"crossval_mit1003: {exc}") from exc
    taps = "" if config.taps is None else f", taps {'+'.join(config.taps)}"
    title = f"MIT1003 crossvalidation: {config.backbone}{taps}, {args.readout} readout, " + (
        "no pretraining" if args.no_pretrain else f"init {', '.join(map(str, args.init))}")
    command = vars(args) | {"workdir": str(args.workdir), "cache_dir": str(args.cache_dir),
                            "init": None if args.init is None else configs.init_argument(args.init),
                            "data_dir": None if args.data_dir is None else str(args.data_dir)}
    train_config = configs.train_config(args)
    at_once = not args.fold_by_fold and batched_training.trainable_at_once(train_config)
    log(f"training {'all folds at once' if at_once else 'fold by fold'}")
    _, report = crossvalidate_dataset(
        mit1003.mit1003(args.data_dir), config, train_config, args.workdir, args.cache_dir, title,
        num_folds=args.folds, fold_seed=args.fold_seed, init=init, command=command, log=log,
        seeds=args.seeds, at_once=at_once, stopping=args.stopping, dtype=batched_training.dtype_of_flag(args.dtype),
    )
    return report


if __name__ == "__main__":
    main()
