"""The Lite0 + Lite1 + Lite2 ensemble of the OSIE-pretrained IIE-taps runs (`lite0_taps_osie`,
`lite1_taps_osie`, `lite2_taps_osie`), averaged in probability image by image.

    python -m experiments.pretrain_osie --config lite0_taps --workdir runs/pretrain_osie_lite0_taps  # and lite1, lite2
    python -m experiments.crossval_mit1003 --config lite0_taps_osie                                  # and lite1, lite2
    python -m experiments.ensemble_mit1003 --config ensemble_taps_osie

The members are fixed in advance, as `ensemble_taps`'s: every obtainable backbone, equal weights.
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get


def get_config() -> Experiment:
    return dataclasses.replace(
        get("ensemble_taps"), workdir=Path("runs/ensemble_taps_osie"),
        members=("lite0_taps_osie", "lite1_taps_osie", "lite2_taps_osie"),
    )
