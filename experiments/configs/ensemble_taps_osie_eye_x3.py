"""`ensemble_taps_osie_x3` with the members pretrained on OSIE's eye fixations (`lite0_taps_osie_eye_x3`,
`lite1_taps_osie_eye_x3`, `lite2_taps_osie_eye_x3`), averaged in probability image by image.

    python -m experiments.crossval_mit1003 --config lite0_taps_osie_eye_x3   # and lite1, lite2 (pretrainings
                                                                           # first: the commands in their docstrings)
    python -m experiments.ensemble_mit1003 --config ensemble_taps_osie_eye_x3
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get


def get_config() -> Experiment:
    return dataclasses.replace(
        get("ensemble_taps_osie_x3"), workdir=Path("runs/ensemble_taps_osie_eye_x3"),
        members=("lite0_taps_osie_eye_x3", "lite1_taps_osie_eye_x3", "lite2_taps_osie_eye_x3"),
    )
