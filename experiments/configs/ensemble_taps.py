"""The Lite0 + Lite1 + Lite2 ensemble on DeepGaze IIE's layers (`lite0_taps`, `lite1_taps`,
`lite2_taps`) under the honest protocol, averaged in probability image by image.

    python -m experiments.crossval_mit1003 --config lite0_taps
    python -m experiments.crossval_mit1003 --config lite1_taps
    python -m experiments.crossval_mit1003 --config lite2_taps
    python -m experiments.ensemble_mit1003 --config ensemble_taps

The members are fixed in advance (every obtainable backbone with the IIE taps, equal weights), as
`ensemble_inner`'s: nothing is chosen on the held-out scores.
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get


def get_config() -> Experiment:
    return dataclasses.replace(
        get("ensemble_inner"), workdir=Path("runs/ensemble_taps"),
        members=("lite0_taps", "lite1_taps", "lite2_taps"),
    )
