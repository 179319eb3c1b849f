"""`lite2_taps_osie_x3` with the pretrainings on OSIE's eye fixations instead of its mouse data
(`docs/pretrain_osie.md` says why and by which rule, fixed before the runs):

    python -m experiments.pretrain_osie --config lite2_taps --fixations eye --workdir runs/pretrain_osie_eye_lite2_taps
    python -m experiments.pretrain_osie --config lite2_taps --fixations eye --init-seed 1 --workdir runs/pretrain_osie_eye_lite2_taps_seed1
    python -m experiments.pretrain_osie --config lite2_taps --fixations eye --init-seed 2 --workdir runs/pretrain_osie_eye_lite2_taps_seed2
    python -m experiments.crossval_mit1003 --config lite2_taps_osie_eye_x3
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite2_taps", instances=3, fixations="eye")
