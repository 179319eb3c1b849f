"""The Lite0 + Lite2 ensemble of the README (83.5% IG explained): the `lite0` and `lite2` runs averaged.

    python -m experiments.crossval_mit1003 --config lite0
    python -m experiments.crossval_mit1003 --config lite2
    python -m experiments.ensemble_mit1003 --config ensemble

The members share folds, fold seed and stopping choice (`crossvalidation.ensemble_crossvalidation` checks it).
"""

from pathlib import Path

from deepgaze_jax.training import TrainConfig
from experiments.configs import Experiment, get, model_config


def get_config() -> Experiment:
    first = get("lite0")
    return Experiment(
        model=model_config("efficientnet_lite0", "paper"),  # the first member's; an ensemble trains nothing
        training=TrainConfig(),
        folds=first.folds,
        fold_seed=first.fold_seed,
        workdir=Path("runs/ensemble"),
        members=("lite0", "lite2"),
        stopping=first.stopping,
    )
