"""`lite1_taps` started from an OSIE pretraining, as `lite0_taps_osie` does for Lite0 (its docstring says why).

    python -m experiments.pretrain_osie --config lite1_taps --workdir runs/pretrain_osie_lite1_taps
    python -m experiments.crossval_mit1003 --config lite1_taps_osie
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite1_taps")
