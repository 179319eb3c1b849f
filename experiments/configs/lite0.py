"""EfficientNet-Lite0, paper readout, no pretraining: the README's first MIT1003 result (78.7% IG explained).

    python -m experiments.crossval_mit1003 --config lite0

Same as ``--backbone efficientnet_lite0 --no-pretrain --workdir runs/crossval --stopping heldout`` (seeds 0):
that figure stopped each fold on its scored part (the protocol before inner stopping), so this
config keeps ``stopping="heldout"`` to reproduce it.
"""

from pathlib import Path

from deepgaze_jax.training import TrainConfig
from experiments.configs import Experiment, model_config


def get_config() -> Experiment:
    return Experiment(
        model=model_config("efficientnet_lite0", "paper"),
        training=TrainConfig(),
        folds=10,
        fold_seed=0,
        workdir=Path("runs/crossval"),
        stopping="heldout",
    )
