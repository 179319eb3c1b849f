"""EfficientNet-Lite2, paper readout, no pretraining: the README's Lite2 row (80.1% IG explained).

    python -m experiments.crossval_mit1003 --config lite2

Same as ``--backbone efficientnet_lite2 --no-pretrain --workdir runs/crossval_lite2`` (seeds 0).
"""

from pathlib import Path

from deepgaze_jax.training import TrainConfig
from experiments.configs import Experiment, model_config


def get_config() -> Experiment:
    return Experiment(
        model=model_config("efficientnet_lite2", "paper"),
        training=TrainConfig(),
        folds=10,
        fold_seed=0,
        workdir=Path("runs/crossval_lite2"),
    )
