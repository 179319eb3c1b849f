"""`lite0_taps_osie_eye_x3` with three more instances per fold: each started from an eye pretraining with
`--init-seed` 3, 4 and 5 (`lite0_taps_osie_eye_x3` has 0, 1, 2). `lite0_taps_osie_eye_x6` pools the two runs
(`docs/pretrain_osie.md`, "Six pretrained instances per fold", says why and by which rule).

    python -m experiments.pretrain_osie --config lite0_taps --fixations eye --init-seed 3 --workdir runs/pretrain_osie_eye_lite0_taps_seed3
    python -m experiments.pretrain_osie --config lite0_taps --fixations eye --init-seed 4 --workdir runs/pretrain_osie_eye_lite0_taps_seed4
    python -m experiments.pretrain_osie --config lite0_taps --fixations eye --init-seed 5 --workdir runs/pretrain_osie_eye_lite0_taps_seed5
    python -m experiments.crossval_mit1003 --config lite0_taps_osie_eye_x3b
"""

from pathlib import Path

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pretrained_on_osie


def get_config() -> Experiment:
    return pretrained_on_osie("lite0_taps", instances=3, fixations="eye", first_seed=3,
                              workdir=Path("runs/crossval_lite0_taps_osie_eye_x3b"))
