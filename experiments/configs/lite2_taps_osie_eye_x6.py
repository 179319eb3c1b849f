"""Six readout instances per fold: the runs `lite2_taps_osie_eye_x3` (eye pretrainings with `--init-seed` 0, 1, 2)
and `lite2_taps_osie_eye_x3b` (3, 4, 5) pooled (`deepgaze_jax.instance_pool`), nothing trained again.

    python -m experiments.crossval_mit1003 --config lite2_taps_osie_eye_x3    # and --config lite2_taps_osie_eye_x3b
                                                                          # (pretrainings first: their docstrings)
    python -m experiments.pool_instances --config lite2_taps_osie_eye_x6

Its model and six inits are those of the pooled runs, so ``crossval_mit1003 --config lite2_taps_osie_eye_x6 --workdir
OTHER`` would train the same six instances in one run instead (about twice the memory of one of them).
"""

from pathlib import Path

from experiments.configs import Experiment
from experiments.configs.lite0_taps_osie import pool_of


def get_config() -> Experiment:
    return pool_of("lite2_taps_osie_eye_x3", "lite2_taps_osie_eye_x3b", Path("runs/crossval_lite2_taps_osie_eye_x6"))
