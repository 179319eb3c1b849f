"""EfficientNet-Lite2, otherwise `lite0_inner`'s honest protocol (inner stopping, Wolfe line search).

    python -m experiments.crossval_mit1003 --config lite2_inner
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get, model_config


def get_config() -> Experiment:
    return dataclasses.replace(
        get("lite0_inner"), model=model_config("efficientnet_lite2", "paper"), workdir=Path("runs/crossval_lite2_inner")
    )
