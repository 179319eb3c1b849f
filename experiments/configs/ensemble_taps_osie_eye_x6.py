"""`ensemble_taps_osie_eye_x3` with six instances per fold and backbone (`lite0_taps_osie_eye_x6`,
`lite1_taps_osie_eye_x6`, `lite2_taps_osie_eye_x6`: pools of two three-instance runs), averaged in probability.

    python -m experiments.pool_instances --config lite0_taps_osie_eye_x6   # and lite1, lite2 (their runs first:
                                                                         # the commands in their docstrings)
    python -m experiments.ensemble_mit1003 --config ensemble_taps_osie_eye_x6
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get


def get_config() -> Experiment:
    return dataclasses.replace(
        get("ensemble_taps_osie_eye_x3"), workdir=Path("runs/ensemble_taps_osie_eye_x6"),
        members=("lite0_taps_osie_eye_x6", "lite1_taps_osie_eye_x6", "lite2_taps_osie_eye_x6"),
    )
