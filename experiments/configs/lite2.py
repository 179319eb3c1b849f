"""EfficientNet-Lite2, otherwise `lite0`'s protocol: the README's Lite2 row (80.1% IG explained).

    python -m experiments.crossval_mit1003 --config lite2

Same as ``--backbone efficientnet_lite2 --no-pretrain --workdir runs/crossval_lite2 --stopping heldout``
(seeds 0; stopping on the scored part, as `lite0`).
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get, model_config


def get_config() -> Experiment:
    return dataclasses.replace(
        get("lite0"), model=model_config("efficientnet_lite2", "paper"), workdir=Path("runs/crossval_lite2")
    )
