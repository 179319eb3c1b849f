"""`lite2_taps` (EfficientNet-Lite2 on DeepGaze IIE's layers, paper readout, inner stopping) with every fold's
readout starting from a readout pretrained on OSIE's mouse pseudo-fixations: the paper's protocol (SALICON
pretraining, then the MIT1003 crossvalidation), on the mouse-tracking data obtainable here.

    python -m experiments.pretrain_osie --config lite2_taps --workdir runs/pretrain_osie_lite2_taps
    python -m experiments.crossval_mit1003 --config lite2_taps_osie

Same as ``--config lite2_taps --init runs/pretrain_osie_lite2_taps/model.npz --workdir runs/crossval_lite2_taps_osie``.
The pretraining sees no MIT1003 image (it stops on OSIE's eye fixations, `docs/pretrain_osie.md`); fixed
by the paper's protocol, not by a MIT1003 score.
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite2_taps")
