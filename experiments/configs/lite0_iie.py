"""EfficientNet-Lite0 with DeepGaze IIE's readout (`readout`, kind "iie": a per-image LayerNorm
before each of 8-16-1 1x1 layers, softplus between them), otherwise `lite0_inner` (default taps
stage5 + stage7, 112 + 320 = 432 channels; inner stopping, Wolfe line search): a model-search candidate.

    python -m experiments.crossval_mit1003 --config lite0_iie
    python -m experiments.model_search --config lite0_inner --config lite0_iie --config lite0_taps --config lite0_iie_taps

Same as ``--backbone efficientnet_lite0 --readout iie --no-pretrain --workdir runs/crossval_lite0_iie
--stopping inner``. Nothing here was chosen on MIT1003 scores: the readout is IIE's as published.
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get, model_config


def get_config() -> Experiment:
    return dataclasses.replace(
        get("lite0_inner"), model=model_config("efficientnet_lite0", "iie"), workdir=Path("runs/crossval_lite0_iie")
    )
