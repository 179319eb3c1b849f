"""EfficientNet-Lite0, paper readout, no pretraining, the honest protocol: each fold stops on one of
its training parts (`stopping="inner"`), never on the part it is scored on; Wolfe line search.

    python -m experiments.crossval_mit1003 --config lite0_inner

Hyperparameters are the defaults of `TrainConfig` and `ModelConfig` (weight decay 0.01, the
backbone's default taps, 512-pixel working long side), none chosen on these runs' scores.
"""

from pathlib import Path

from deepgaze_jax.training import TrainConfig
from experiments.configs import Experiment, model_config


def get_config() -> Experiment:
    return Experiment(
        model=model_config("efficientnet_lite0", "paper"),
        training=TrainConfig(),
        workdir=Path("runs/crossval_lite0_inner"),
        stopping="inner",
    )
