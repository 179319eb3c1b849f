"""EfficientNet-Lite1 reading DeepGaze IIE's choice of layers, paper readout (16-32-2-1), otherwise
`lite1_inner` (inner stopping, Wolfe line search).

    python -m experiments.crossval_mit1003 --config lite1_taps

Same as ``--backbone efficientnet_lite1 --taps block12_depthwise,block14_depthwise,block19_project
--no-pretrain --workdir runs/crossval_lite1_taps --stopping inner``.

The taps are `efficientnet_lite.Variant.iie_taps`: the positions `lite0_taps` carried over from
IIE's EfficientNet-B5 (the third-last and last block of stage 5 at their depthwise outputs, the last
block of stage 6 at its projection), here blocks 12 and 14 (stage 5 = blocks 11-14) and block 19
(stage 6 = blocks 15-19): 672 + 672 + 192 = 1536 channels, vs 112 + 320 = 432 for the default stage5 + stage7.
Fixed by that rule before any run of this configuration, not by any MIT1003 score.
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps import with_iie_taps


def get_config() -> Experiment:
    return with_iie_taps("lite1_inner", "paper", "runs/crossval_lite1_taps")
