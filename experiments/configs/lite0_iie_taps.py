"""EfficientNet-Lite0 with both DeepGaze IIE choices: its readout (`lite0_iie`) over its layers
(`lite0_taps`: block8_depthwise, block10_depthwise, block14_project, 1344 channels), otherwise
`lite0_inner` (inner stopping, Wolfe line search): a model-search candidate.

    python -m experiments.crossval_mit1003 --config lite0_iie_taps
    python -m experiments.model_search --config lite0_inner --config lite0_iie --config lite0_taps --config lite0_iie_taps

Same as ``--backbone efficientnet_lite0 --readout iie --taps block8_depthwise,block10_depthwise,block14_project
--no-pretrain --workdir runs/crossval_lite0_iie_taps --stopping inner``. It shares `lite0_taps`'s
feature cache (same backbone, taps and working size).
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps import with_iie_taps


def get_config() -> Experiment:
    return with_iie_taps("lite0_inner", "iie", "runs/crossval_lite0_iie_taps")
