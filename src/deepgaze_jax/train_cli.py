"""``deepgaze-jax train --stimuli DIR --fixations FILE --out model.npz``: crossvalidated training on your data.

Trains the readout (and blur, centre-bias weight) on any eye-tracking dataset in a format
`data.formats.load_fixations` reads (NUS ``.mat``, CSV/TSV, pysaliency HDF5), by the
paper's protocol: ``--folds`` crossvalidation (at least 3), every image scored by the fold
model that never saw it, each fold stopped on another of its training parts (``--stopping``).
Writes ``--out`` (the fold models as one mixture, with a centre bias fitted on all
fixations: `predict`, `evaluate`, `plot`, `serve` and `export` take it) and, in the
work directory, the crossvalidation report (``report.md``, ``report.json``, figures).
Re-running the same command resumes: finished folds are skipped, the current one continues
from its last checkpoint. The folds (x ``--seeds``) train at once in one vectorised program
(``--fold-by-fold``: one after the other), in float32 on a CPU and bfloat16 on a GPU
(``--dtype``). ``--init lite0`` fine-tunes a bundled single model (the paper's
protocol with our model as the pretraining); ``--init FILE`` starts from any model file.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from deepgaze_jax.backbones import BACKBONES
from deepgaze_jax.batched_training import DTYPE_HELP, DTYPES, dtype_of_flag, trainable_at_once
from deepgaze_jax.crossvalidation import STOPPING, STOPPING_HELP
from deepgaze_jax.readout import READOUTS
from deepgaze_jax.training import TrainConfig


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="crossvalidated training of the readout on your own fixations")
    p.add_argument("--stimuli", type=Path, default=None, help="folder of the images (not needed for a pysaliency HDF5 holding them)")
    p.add_argument("--fixations", type=Path, required=True, help=".mat (NUS), .csv/.tsv or .hdf5 (pysaliency)")
    p.add_argument("--out", type=Path, required=True, help="model file to write (.npz)")
    p.add_argument("--backbone", default="efficientnet_lite0", help=f"one of {', '.join(BACKBONES)} (or a registered one)")
    p.add_argument("--readout", default="paper", choices=sorted(READOUTS), help="paper 16-32-2-1, linear or iie (8-16-1)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the split of images into folds")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the readout initialisation")
    p.add_argument("--seeds", type=int, default=1, help="readout instances per fold (averaged in probability)")
    p.add_argument("--stopping", choices=STOPPING, default=None, help=STOPPING_HELP)
    p.add_argument("--init", default=None, help="a bundled single model to fine-tune (lite0, lite1, lite2) or a model .npz")
    p.add_argument("--max-epochs", type=int, default=TrainConfig.max_epochs)
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="L2 on readout weights")
    p.add_argument("--fold-by-fold", action="store_true",
                   help="train the folds one after the other (default: all folds x seeds at once in one vectorised program)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    p.add_argument("--drop-invalid", action="store_true", help="drop (and count) bad fixation records")
    p.add_argument("--workdir", type=Path, default=None, help="checkpoints and report (default: <out>.run/)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"), help="feature cache directory")
    p.set_defaults(func=run)


def workdir_for(args: argparse.Namespace) -> Path:
    """``--workdir``, else ``<out without suffix>.run`` beside the model file."""
    return args.workdir if args.workdir is not None else args.out.with_suffix(".run")


def run(args: argparse.Namespace) -> int:
    from deepgaze_jax.data.formats import load_fixations
    from deepgaze_jax.dataset_training import crossvalidate_dataset, load_init
    from deepgaze_jax.model import ModelConfig
    from deepgaze_jax.weights import WeightsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    config = ModelConfig.for_readout(args.backbone, args.readout)
    workdir = workdir_for(args)
    try:
        dataset = load_fixations(args.fixations, args.stimuli, drop_invalid=args.drop_invalid)
        init = None if args.init is None else load_init(args.init, config)
        train_config = TrainConfig(max_epochs=args.max_epochs, weight_decay=args.weight_decay, seed=args.init_seed)
        title = f"{dataset.name} crossvalidation: {config.backbone}, {args.readout} readout, init {args.init or 'random'}"
        command = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
        crossvalidate_dataset(
            dataset, config, train_config, workdir, args.cache_dir, title, num_folds=args.folds,
            fold_seed=args.fold_seed, init=init, mode="aspect", command=command, seeds=args.seeds,
            stopping=args.stopping, at_once=not args.fold_by_fold and trainable_at_once(train_config),
            dtype=dtype_of_flag(args.dtype),
        )
    except (ValueError, OSError, WeightsError) as exc:
        print(f"deepgaze-jax train: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.part")
    shutil.copyfile(workdir / "mixture.npz", tmp)
    tmp.replace(args.out)
    print(f"wrote {args.out}; crossvalidation report in {workdir / 'report.md'}")
    return 0
