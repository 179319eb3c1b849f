"""Experiment configurations (one file per reported run, big_vision style) and shared options.

Each ``experiments/configs/<name>.py`` has ``get_config() -> Experiment`` (model config,
training config, folds, seeds) and its run command in the docstring; the runners take
``--config <name>``, whose values become the defaults of the other flags (flags given
explicitly still win). `NAMES` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from pathlib import Path
from typing import Sequence

import jax

from deepgaze_jax import compilation_cache
from deepgaze_jax.backbones import BACKBONES, get_backbone
from deepgaze_jax.batched_training import DTYPE_HELP, DTYPES
from deepgaze_jax.crossvalidation import STOPPING, STOPPING_HELP
from deepgaze_jax.model import ModelConfig, bundled_members
from deepgaze_jax.readout import READOUTS, ReadoutSpec
from deepgaze_jax.training import LINE_SEARCHES, TrainConfig

DEFAULT_CACHE_DIR = Path("cache/features")


NAMES = ("lite0", "lite2", "ensemble", "lite0_inner", "lite1_inner", "lite2_inner", "ensemble_inner",
         "lite0_iie", "lite0_taps", "lite0_iie_taps", "lite1_taps", "lite2_taps", "ensemble_taps",
         "lite0_taps_osie", "lite1_taps_osie", "lite2_taps_osie", "ensemble_taps_osie",
         "lite0_taps_osie_x3", "lite1_taps_osie_x3", "lite2_taps_osie_x3", "ensemble_taps_osie_x3",
         "lite0_taps_osie_eye_x3", "lite1_taps_osie_eye_x3", "lite2_taps_osie_eye_x3", "ensemble_taps_osie_eye_x3",
         "lite0_taps_osie_eye_x3b", "lite1_taps_osie_eye_x3b", "lite2_taps_osie_eye_x3b",
         "lite0_taps_osie_eye_x6", "lite1_taps_osie_eye_x6", "lite2_taps_osie_eye_x6", "ensemble_taps_osie_eye_x6")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One reported run.

    Attributes:
      model: the model configuration (built by `model_config`, so ``--backbone`` / ``--readout`` / ``--taps``
        express it).
      training: the training configuration; its ``seed`` is the initialisation seed.
      folds: crossvalidation folds over the images.
      fold_seed: seed of the split of images into folds.
      workdir: where the run writes (``--workdir`` default).
      members: for an ensemble, the names of the configurations whose runs it averages; for a pool
        (`experiments.pool_instances`), those of the runs of this configuration whose instances it pools.
      stopping: the part each fold stops on (`crossvalidation.fold_split`): "inner" (honest) or
        "heldout" (the protocol of the figures published before the choice existed).
      seeds: readout instances per fold (averaged in probability).
      init: the model file every fold's readout starts from (e.g. an `experiments.pretrain_osie` run's
        ``model.npz``, made first by the command in the config's docstring), or a tuple of one per readout
        instance (``seeds`` of them); None: a random readout.
    """

    model: ModelConfig
    training: TrainConfig
    folds: int = 10
    fold_seed: int = 0
    workdir: Path = Path("runs/crossval")
    members: tuple[str, ...] = ()
    stopping: str = "inner"
    seeds: int = 1
    init: Path | None = None


def get(name: str) -> Experiment:
    """The experiment of ``experiments/configs/<name>.py``."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment config {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"experiments.configs.{name}").get_config()


def init_paths(init: Path | str | Sequence[Path | str] | None) -> tuple[Path, ...] | None:
    """``--init`` / `Experiment.init` as a tuple of model paths (one per readout instance, or one for all), or None.

    >>> init_paths("a.npz"), init_paths(["a.npz", "b.npz"]), init_paths(None)
    ((PosixPath('a.npz'),), (PosixPath('a.npz'), PosixPath('b.npz')), None)
    """
    if init is None:
        return None
    return (Path(init),) if isinstance(init, (str, Path)) else tuple(Path(i) for i in init)


def init_argument(paths: Sequence[Path]) -> str | list[str]:
    """How a run's report records its `init_paths`: the path, or the list of them."""
    return str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]


def check_init(init: Path | str | Sequence[Path | str] | None, config: str | None) -> None:
    """Raises ``FileNotFoundError`` saying what to run when a model of ``init`` (the model files a run starts
    from, e.g. a config's pretraining) is missing; a bundled model name (e.g. ``lite0``) is never missing."""
    for path in init_paths(init) or ():
        if Path(path).is_file() or bundled_members(str(path)) is not None:
            continue
        where = f"the pretraining in experiments/configs/{config}.py's docstring" if config else "the run that writes it"
        raise FileNotFoundError(f"{path}, a model to start from, is missing: run {where} first "
                                "(or start from another model with --init FILE, or from scratch with --no-pretrain)")


def flag_defaults(experiment: Experiment) -> dict:
    """The flag values (argparse dests) that reproduce ``experiment``'s model and training configs."""
    model = experiment.model
    spec = ReadoutSpec(model.readout_kind, model.readout_features)
    readout = next((k for k, v in READOUTS.items() if v == spec), None)
    if readout is None or model_config(model.backbone, readout, model.taps) != model:
        raise ValueError(f"{model} is not expressible by --backbone / --readout / --taps; build it with model_config")
    t = experiment.training
    flags = TrainConfig(optimizer=t.optimizer, max_epochs=t.max_epochs, learning_rate=t.learning_rate,
                        batch_size=t.batch_size, weight_decay=t.weight_decay, seed=t.seed, line_search=t.line_search)
    if flags != t:
        raise ValueError(f"{t} sets fields the training flags cannot; leave them at their defaults")
    return dict(
        backbone=model.backbone, readout=readout, taps=model.taps, optimizer=t.optimizer, max_epochs=t.max_epochs,
        learning_rate=t.learning_rate, batch_size=t.batch_size, weight_decay=t.weight_decay, folds=experiment.folds,
        line_search=t.line_search, seeds=experiment.seeds,
        config_fold_seed=experiment.fold_seed, config_init_seed=t.seed, stopping=experiment.stopping,
        init=init_paths(experiment.init),
    )


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--config``'s values as defaults, and the seeds resolved.

    Seeds: ``--fold-seed`` / ``--init-seed`` if given, else ``--seed`` (both), else the config's, else 0.
    """
    known, _ = parser.parse_known_args(argv)
    if known.config is not None:
        parser.set_defaults(**flag_defaults(get(known.config)))
    args = parser.parse_args(argv)
    try:
        model_config_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    args.fold_seed = next(s for s in (args.fold_seed, args.seed, args.config_fold_seed) if s is not None)
    args.init_seed = next(s for s in (args.init_seed, args.seed, args.config_init_seed) if s is not None)
    return args


def model_config(
    backbone: str = "efficientnet_lite0", readout: str = "paper", taps: tuple[str, ...] | None = None
) -> ModelConfig:
    """The paper's model on ``backbone`` with readout ``readout`` (a key of `READOUTS`: the paper's
    16-32-2-1, a linear one (DeepGaze I) or DeepGaze IIE's 8-16-1) reading ``taps`` (None: the
    backbone's default taps); ValueError naming an unknown tap."""
    if taps is not None:
        available = get_backbone(backbone).strides
        unknown = [tap for tap in taps if tap not in available]
        if unknown or not taps:
            raise ValueError(f"--taps: unknown taps {unknown} of {backbone}; choose from {', '.join(available)}")
    return ModelConfig.for_readout(backbone, readout, taps)


def model_config_of(args: argparse.Namespace) -> ModelConfig:
    """The `model_config` of parsed ``--backbone``, ``--readout`` and ``--taps``."""
    return model_config(args.backbone, args.readout, args.taps)


def taps_flag(text: str) -> tuple[str, ...]:
    """``--taps`` as a tuple: comma-separated tap names, e.g. ``block8_depthwise,block10_depthwise``."""
    return tuple(tap.strip() for tap in text.split(","))


def add_model_and_training_args(parser: argparse.ArgumentParser) -> None:
    """--config, --backbone, --readout, --taps, --optimizer, --max-epochs, seeds, --cache-dir, --dtype,
    --batch-size, --learning-rate.

    Parse with `parse_args`, which applies ``--config`` and resolves the seeds.
    """
    parser.add_argument("--config", choices=NAMES, default=None, help="an experiments/configs/<name>.py as defaults")
    parser.add_argument("--backbone", default="efficientnet_lite0", help=f"one of {', '.join(BACKBONES)}")
    parser.add_argument("--readout", default="paper", choices=sorted(READOUTS),
                        help="paper 16-32-2-1, linear (DeepGaze I) or iie (DeepGaze IIE's LayerNorm + softplus 8-16-1)")
    parser.add_argument("--taps", type=taps_flag, default=None,
                        help="comma-separated backbone taps (default: the backbone's), e.g. "
                             "block10_depthwise,block14_project (names: deepgaze_jax.backbones.efficientnet_lite)")
    parser.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "adam"))
    parser.add_argument("--max-epochs", type=int, default=TrainConfig.max_epochs)
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate, help="Adam only")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="Adam only: images per step")
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="L2 on readout weights")
    parser.add_argument("--line-search", default=TrainConfig.line_search, choices=LINE_SEARCHES,
                        help="L-BFGS line search: wolfe (default; lets the folds train at once) or zoom (optax.lbfgs, the earlier runs)")
    parser.add_argument("--seed", type=int, default=None, help="sets both --fold-seed and --init-seed (default 0)")
    parser.add_argument("--fold-seed", type=int, default=None, help="seed of the split into folds (default 0)")
    parser.add_argument("--init-seed", type=int, default=None, help="seed of the readout initialisation (default 0)")
    parser.set_defaults(config_fold_seed=0, config_init_seed=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="feature cache directory")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    parser.add_argument(
        "--distributed", action="store_true",
        help="multi-host: call jax.distributed.initialize() first (run the same command on every host)",
    )


def add_stopping_arg(parser: argparse.ArgumentParser) -> None:
    """--stopping inner|heldout (default: the workdir's recorded choice, else inner)."""
    parser.add_argument("--stopping", choices=STOPPING, default=None, help=STOPPING_HELP)


def start(args: argparse.Namespace) -> None:
    """On ``--distributed`` the multi-host runtime (before any other JAX call), then `start_process`."""
    if args.distributed:
        jax.distributed.initialize()
    start_process()


def start_process() -> None:
    """What every experiment sets up for its process: `setup_logging` and the persistent compilation
    cache (`compilation_cache.enable`: later runs load the programs that earlier ones compiled)."""
    setup_logging()
    folder = compilation_cache.enable()
    logging.getLogger(__name__).info(f"compiled programs kept in {folder}" if folder else "no compilation cache")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        optimizer=args.optimizer,
        max_epochs=args.max_epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        seed=args.init_seed,
        line_search=args.line_search,
    )


def parse_runs(argv: list[str] | None, description: str, what: str, default_workdir: Path) -> argparse.Namespace:
    """The command line of a script over finished ``crossval_mit1003`` runs (an ensemble, a pool): the runs'
    working directories, or ``--config`` (``what`` config, whose ``members`` name them); ``--data-dir``,
    ``--workdir`` (default: the config's, else ``default_workdir``) and ``--cache-dir``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="working directories of finished crossval_mit1003 runs")
    parser.add_argument("--config", choices=NAMES, default=None, help=f"{what} config: the runs of its members")
    parser.add_argument("--data-dir", type=Path, default=None, help="MIT1003 root (default: discovered)")
    parser.add_argument("--workdir", type=Path, default=None, help=f"default: the config's, else {default_workdir}")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="the runs' feature cache directory: the baselines' fits are kept in its fits/ folder")
    args = parser.parse_args(argv)
    experiment = get(args.config) if args.config else None
    if experiment is not None and not args.runs:
        if not experiment.members:
            parser.error(f"--config {args.config} names no runs (it has no members): give the runs' working directories")
        args.runs = [get(member).workdir for member in experiment.members]
    if len(args.runs) < 2:
        parser.error("give the working directories of at least two runs, or --config")
    args.workdir = args.workdir or (experiment.workdir if experiment else default_workdir)
    return args


def setup_logging() -> None:
    """INFO lines with timestamps on stdout (``force``: an imported library may have configured logging)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True)
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
