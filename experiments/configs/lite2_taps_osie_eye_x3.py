"""`lite2_taps_osie_x3` pretrained on OSIE's eye fixations, as `lite0_taps_osie_eye_x3` is for Lite0 (its
docstring has the three pretraining commands; here with `--config lite2_taps` into
`runs/pretrain_osie_eye_lite2_taps`, `_seed1` and `_seed2`); then

    python -m experiments.crossval_mit1003 --config lite2_taps_osie_eye_x3
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite2_taps", instances=3, fixations="eye")
