"""`lite2_taps_osie` with three pretrained readout instances per fold, as `lite0_taps_osie_x3` does for Lite0
(its docstring says how). Pretrainings: `lite2_taps_osie`'s, and the same with `--init-seed 1` and `2` into
`runs/pretrain_osie_lite2_taps_seed1` and `_seed2`; then

    python -m experiments.crossval_mit1003 --config lite2_taps_osie_x3
"""

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite2_taps", instances=3)
