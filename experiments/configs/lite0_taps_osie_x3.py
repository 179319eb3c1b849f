"""`lite0_taps_osie` with three readout instances per fold, each started from its own OSIE pretraining
(DeepGaze IIE averages three instances per backbone; `docs/pretrain_osie.md` says how this was decided).

    python -m experiments.pretrain_osie --config lite0_taps --workdir runs/pretrain_osie_lite0_taps
    python -m experiments.pretrain_osie --config lite0_taps --init-seed 1 --workdir runs/pretrain_osie_lite0_taps_seed1
    python -m experiments.pretrain_osie --config lite0_taps --init-seed 2 --workdir runs/pretrain_osie_lite0_taps_seed2
    python -m experiments.crossval_mit1003 --config lite0_taps_osie_x3
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite0_taps", instances=3)
