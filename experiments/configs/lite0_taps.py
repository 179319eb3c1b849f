"""EfficientNet-Lite0 reading DeepGaze IIE's choice of layers, paper readout (16-32-2-1), otherwise
`lite0_inner` (inner stopping, Wolfe line search): a model-search candidate.

    python -m experiments.crossval_mit1003 --config lite0_taps
    python -m experiments.model_search --config lite0_inner --config lite0_iie --config lite0_taps --config lite0_iie_taps

Same as ``--backbone efficientnet_lite0 --taps block8_depthwise,block10_depthwise,block14_project
--no-pretrain --workdir runs/crossval_lite0_taps --stopping inner``.

The taps (`efficientnet_lite.Variant.iie_taps`, 480 + 672 + 192 = 1344 channels, vs 432 for the default stage5 +
stage7) are fixed a priori by carrying over DeepGaze IIE's recipe for its EfficientNet-B5
(``deepgaze2e.py`` of the DeepGaze repository: ``_blocks.24._depthwise_conv``,
``_blocks.26._depthwise_conv``, ``_blocks.35._project_conv``), not by looking at any MIT1003 score.
In B5, blocks 24 and 26 are the third-last and the last block of the last stride-16 stage (stage
5, blocks 20-26), block 35 the last block of the stride-32 stage before the last one (stage 6,
blocks 27-35): IIE reads the depthwise (expanded, 6 x 176 channels) features of two blocks late in
the stride-16 stage and the projection of the last block before the final stage. The same
positions in Lite0 (`efficientnet_lite.VARIANTS`: stage 5 = blocks 8-10, stage 6 = blocks 11-14)
are the depthwise outputs of blocks 8 and 10 (stride 16; 6 x 80 and 6 x 112 channels) and the
projection of block 14 (stride 32, 192 channels, before its skip addition as IIE's hook on
``_project_conv``), the stride-32 tap resized to the stride-16 grid (`model.feature_grid`).

Cost: the feature grids have 1344 / 432 = 3.1 times the channels of `lite0_inner`'s (the feature
cache, the grids in memory and the readout's first layer as much larger); its cache is separate
(the taps are part of the cache key). Some of block10_depthwise's channels are constant on MIT1003's
images (dead inputs): the readout leaves channels of training std below `readout.CONSTANT_STD` out.
"""

import dataclasses
from pathlib import Path

from deepgaze_jax.backbones.efficientnet_lite import VARIANTS
from experiments.configs import Experiment, get, model_config


def with_iie_taps(base: str, readout: str, workdir: str) -> Experiment:
    """Configuration ``base`` reading its backbone's `Variant.iie_taps` through ``readout``, into ``workdir``."""
    experiment = get(base)
    backbone = experiment.model.backbone
    return dataclasses.replace(
        experiment, model=model_config(backbone, readout, VARIANTS[backbone].iie_taps), workdir=Path(workdir),
    )


def get_config() -> Experiment:
    return with_iie_taps("lite0_inner", "paper", "runs/crossval_lite0_taps")
