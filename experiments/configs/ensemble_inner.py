"""The Lite0 + Lite1 + Lite2 ensemble under the honest protocol: the three `lite*_inner` runs averaged
in probability, image by image (each image scored by the three fold models that never saw it).

    python -m experiments.crossval_mit1003 --config lite0_inner
    python -m experiments.crossval_mit1003 --config lite1_inner
    python -m experiments.crossval_mit1003 --config lite2_inner
    python -m experiments.ensemble_mit1003 --config ensemble_inner

The members are fixed in advance (every obtainable backbone, equal weights): nothing is chosen on
the held-out scores.
"""

from pathlib import Path

from experiments.configs import Experiment, get


def get_config() -> Experiment:
    first = get("lite0_inner")
    return Experiment(
        model=first.model,  # the first member's; an ensemble trains nothing
        training=first.training,
        folds=first.folds,
        fold_seed=first.fold_seed,
        workdir=Path("runs/ensemble_inner"),
        members=("lite0_inner", "lite1_inner", "lite2_inner"),
        stopping=first.stopping,
    )
